"""Training the network of model.py, as train_new.py wires it: the batches of an epoch
(samplers), the images and how they are augmented (data), where a run starts from (start: ImageNet,
another run with --init_from, or its own state with --resume), and the loop of epochs and steps with
its validation, checkpoints and calibration (loop)."""
