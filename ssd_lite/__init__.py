"""ssd_lite: a readable SSD (Single Shot MultiBox Detector) for learning.

One module per idea of the paper, in the order the course teaches it:
boxes, priors, matching, loss, nms, model, data, train, evaluate, detect, plot, exercises.
Import what you need from its module, e.g. `from ssd_lite.boxes import box_iou`.
"""

__version__ = "0.1.0"
