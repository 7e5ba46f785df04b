"""ssd_lite: a readable SSD (Single Shot MultiBox Detector) for learning.

One module per idea of the paper, in the order the course teaches it:
boxes, priors, matching, loss, nms, model, data (shapes, voc), augment, train, checkpoint, detect, evaluate,
plot, exercises. Around them: cli and device (what the command lines share), student_copies (the tool that
writes the student notebooks) and _checking (the exercise checkers' runner).
Import what you need from its module, e.g. `from ssd_lite.boxes import box_iou`.
"""

__version__ = "0.1.0"
