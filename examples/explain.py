"""Explain two of the sample images with the model that ships with
gcm-lasagne: print their top classes and write a Figure 6 style PNG of
their Class Contribution Maps (red frame: the predicted class).

    pip install .                        # once (or pip install -e .)
    python examples/explain.py [OUT.png]   # default: explained.png
"""
import os
import sys

import gcm_lasagne
from gcm_lasagne import shipped, visualize

out = sys.argv[1] if len(sys.argv) > 1 else 'explained.png'
model = gcm_lasagne.load_model(shipped.model_path())
paths = [p for p in shipped.sample_paths()
         if p.endswith((os.path.join('cat', '0000.jpg'),
                        os.path.join('ship', '0000.jpg')))]
images = gcm_lasagne.read_images(paths, model.input_shape)  # uint8 (2, 3, 32, 32)
label, scores, prob = model.predict(images)                # (2,), (2, 10), (2, 10)
ccm = model.class_contribution_maps(images)                # (2, 10, 3, 32, 32)
for path, p in zip(paths, prob):
    top = p.argsort()[::-1][:3]
    print('%s: %s' % (path, ', '.join('%s %.1f%%' % (model.classes[j],
                                                      100 * p[j])
                                       for j in top)))
visualize.figure6(images, ccm, scores, label, model.classes, out,
                  frame='predicted')
print('wrote', out)
