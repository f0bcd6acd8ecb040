"""Our two ways of computing, as throughput.py and torch_compare.py time
them side by side:
- winograd: what the package runs now. Winograd's algorithm for the
  stride-1 3x3 and 5x5 convolutions (GCM_WINOGRAD=1, the default), and for
  inference gcm_lasagne.inference's graph, each batch norm folded into its
  convolution with the bias and the ReLU inside it (gcm_lasagne.convfuse);
- direct: what it ran before those: the direct convolutions only
  (GCM_WINOGRAD=0) and Lasagne's deterministic graph, a batch-norm op
  after each convolution.
The training step is the same graph on both (GCM_WINOGRAD alone differs).
"""
PATHS = ('winograd', 'direct')


def environment(path):
    """The variables a path's process compiles its ops with."""
    return {'GCM_WINOGRAD': '0' if path == 'direct' else '1'}


def path_of(environ):
    """The path a process with these variables runs."""
    return 'direct' if environ.get('GCM_WINOGRAD', '1').strip() == '0' \
        else 'winograd'


def inference_output(net, path):
    """The class probabilities ('prob') as `path` computes them."""
    import lasagne
    from gcm_lasagne import inference
    if path == 'direct':
        return lasagne.layers.get_output(net['prob'], deterministic=True)
    return inference.get_output(net['prob'])
