"""Issue 10's last steps once gcm-clip has finished (not part of the package):
export the run, write the model folder's README.md and NOTES.md from its
log and metrics, and print the numbers the main README needs.
Run from the repository with the venv:
    .venv/bin/python runs-in-progress/finish.py /work/runs/gcm-clip "SECTION"
SECTION: the NOTES.md paragraph about the last session (markdown)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np

run, last_section = sys.argv[1], sys.argv[2]
out = 'models/gcm-clip-cifar10jpeg'
metrics = json.load(open(os.path.join(run, 'metrics.json')))
assert metrics['epochs'] == 180, metrics['epochs']
subprocess.check_call([sys.executable, 'run_cifar10.py', 'export', run, out])
with open(os.path.join(out, 'log.csv')) as f:
    log = list(csv.DictReader(f))
acc = [100 * float(r['eval_acc']) for r in log]
secs = [float(r['seconds']) for r in log]
best = int(np.argmax(acc))
final = 100 * metrics['accuracy']
hours = sum(secs) / 3600
loss = [float(r['eval_loss']) for r in log]
low = int(np.argmin(loss))

open(os.path.join(out, 'README.md'), 'w').write('''\
# Clipped GCM, Table 2's full recipe (Figure 7)

GCM with its Class Weight Maps clipped at zero (a ReLU after layer 15;
Table 1, %s trainable parameters, the paper's 162K), trained by this
project with Table 2's recipe unchanged: 180 epochs of all 50,000 training
images, learning rate 0.1 divided by 10 after epochs 100 and 150, batch
128, momentum 0.9, no weight decay, pad-4 random crops and flips, pixels
in [0, 1], seed 1:

    python run_cifar10.py --runs /work/runs reproduce --data /work/data/cifar10-jpeg

which trains it as `run_cifar10.py train --model gcm-clip --data
/work/data/cifar10-jpeg --seed 1 --out /work/runs/gcm-clip` after GCM and
the CNN, resuming it across sessions, then `run_cifar10.py export
/work/runs/gcm-clip models/gcm-clip-cifar10jpeg` (which names the data set
in `config.json` and the model file instead of the machine's folder).

**Data.** The JPEG re-encoding of CIFAR-10 in
`../shared/data/cifar10-jpeg.tar.gz` (sha256 `820394552d8c...01edb25bc5f0`),
extracted to a folder; the official archive cannot be downloaded on this
project's machines, so this is not the paper's data.

**Result.** Test accuracy on all 10,000 test images of that data: **%.2f%%**
after epoch 180 (the paper: 89.91%% on the official data); the best epoch,
%d, had %.2f%%. Per-class accuracy and the confusion matrix are in
`metrics.json`, every epoch's losses and accuracies in `log.csv`.

**Machine and time.** 2 cores of an AMD EPYC, no GPU, the package's CPU
ops, on two machines: epochs 1-94 on a Zen 3 (AVX2, no AVX-512), the
machine GCM and the CNN ran on, at a median %.1f s an epoch; epochs 95-180
on a Zen 4 (AVX-512) at a median %.1f s (each epoch 50,000 training images
and the 10,000 test images). The compiled kernels differ between the two,
so the run equals an uninterrupted one only to float32 rounding. The 180
epochs' logged seconds add up to %.2f h. Some epochs shared the machine
with other work; which, when the run was stopped and resumed, and the
seconds of each: [NOTES.md](NOTES.md), the notes kept while it ran.
''' % ('{:,}'.format(metrics['params']), final, best + 1, acc[best],
       float(np.median(secs[:94])), float(np.median(secs[94:])), hours))

notes = open('runs-in-progress/gcm-clip/NOTES.md').read().rstrip('\n')
open(os.path.join(out, 'NOTES.md'), 'w').write(
    notes + '\n\n' + last_section.strip('\n') + '\n')

print('final %.2f%%  best epoch %d %.2f%%  %.2f h  median %.1f s/epoch '
      '(epochs 1-94 %.1f, 95-180 %.1f)'
      % (final, best + 1, acc[best], hours, float(np.median(secs)),
         float(np.median(secs[:94])), float(np.median(secs[94:]))))
print('train acc at 180 %.2f%%; lowest test loss epoch %d (%.3f); after '
      'epoch 101 %.3f, after 180 %.3f; test acc after epoch 100 in '
      '[%.2f, %.2f]' % (100 * float(log[-1]['train_acc']), low + 1, loss[low],
                        loss[100], loss[-1], min(acc[100:]), max(acc[100:])))
