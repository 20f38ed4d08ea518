"""train_new.py's flags: one definition, which the script, the benchmarks and the tests share, so
that each trains the network exactly as a user's command line would. docs/training.md explains
them; `python train_new.py --help` lists them with their defaults."""
import argparse

from reid import cli


def parse_args(argv=None, description=__doc__):
    """train_new.py's flags, resolved (the defaults where not given)."""
    p = cli.parser(description)
    cli.add_run_flags(p, "to write", which_epoch=False)
    cli.add_device_flags(p, "train")
    p.add_argument("--data_dir", default="../Market/pytorch", help="the pytorch/ folder written by prepare.py")
    p.add_argument("--train_all", action="store_true",
                   help="train on train_all (train + val), as the original did with or without this flag; no "
                        "validation")
    p.add_argument("--batchsize", default=32, type=int,
                   help="anchors per batch (each brings a positive and a negative)")
    p.add_argument("--lr", default=0.1, type=float,
                   help="learning rate of the new layers; a pretrained backbone gets 0.1 x lr")
    p.add_argument("--alpha", default=1.0, type=float, help="weight of the verification loss")
    p.add_argument("--label_smoothing", default=0.0, type=float,
                   help="share of the identity loss's target spread evenly over all identities (0: the paper's "
                        "plain cross-entropy; 0.1 is common in later re-ID work)")
    p.add_argument("--erasing_p", default=0, type=float, help="random erasing probability (0 disables it)")
    p.add_argument("--color_jitter", action="store_true", help="jitter brightness, contrast and saturation by 0.1")
    p.add_argument("--use_dense", action="store_true", default=None,
                   help="DenseNet-121 backbone instead of ResNet-50 (not given: ResNet-50, or the --init_from run's)")
    p.add_argument("--stride", default=None, type=int, choices=[1, 2],
                   help="ResNet-50's stride in its last block: 2 as ImageNet's (and the paper's), 1 keeps twice the "
                        "resolution in its last feature map, at more arithmetic (not given: 2, or the --init_from "
                        "run's)")
    p.add_argument("--epochs", default=60, type=int, help="number of epochs")
    p.add_argument("--decay_epoch", default=40, type=int,
                   help="--lr_schedule step: epoch after which every learning rate is multiplied by 0.1")
    p.add_argument("--lr_schedule", default="step", choices=["step", "cosine"],
                   help="step: every learning rate x0.1 after --decay_epoch (the original's); cosine: each falls "
                        "along half a cosine from its value at the first epoch towards 0 after the last (a --resume "
                        "with more --epochs stretches the rest of the curve)")
    p.add_argument("--warm_epoch", default=0, type=int,
                   help="epochs over which every learning rate rises step by step from 0.1 x its scheduled value "
                        "to it (0: none, as the paper; at most --decay_epoch, or --epochs with --lr_schedule cosine)")
    p.add_argument("--ema_decay", default=0.0, type=float,
                   help="keep an exponential moving average of the weights and BatchNorm statistics, each step "
                        "average = decay x average + (1 - decay) x weights, and validate and save it instead of the "
                        "last weights (0: none, as the paper; 0.999 averages over about the last 1000 steps)")
    p.add_argument("--seed", default=0, type=int,
                   help="seed of every random number generator (weights, sampling, augmentation)")
    p.add_argument("--height", default=None, type=int,
                   help="input image height (not given: 256, or the --init_from run's)")
    p.add_argument("--width", default=None, type=int,
                   help="input image width (not given: 128, or the --init_from run's)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (torchvision); --no-pretrained trains from scratch")
    p.add_argument("--sampler", default="triplet", choices=["triplet", "pk"],
                   help="triplet: a positive and a negative loaded per anchor (the original); "
                        "pk: P identities x K images per batch, pairs formed inside it (one forward pass)")
    p.add_argument("--instances", default=2, type=int,
                   help="--sampler pk: images per identity in a batch (K); 2 gives each anchor one positive "
                        "and the batch the most identities")
    p.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format (faster convolutions on GPUs and at 256 x 128 on CPUs)")
    p.add_argument("--compile", action="store_true", help="compile the network with torch.compile (slow first steps)")
    p.add_argument("--init_from", default=None, metavar="RUN",
                   help="start from this trained run (model/<name>, or its name) instead of ImageNet: its backbone, "
                        "bottleneck and verification head, a new identity classifier; its backbone then learns at "
                        "0.1 x lr, as a pretrained one (not given: ImageNet weights, or none with --no-pretrained)")
    p.add_argument("--resume", action="store_true",
                   help="continue model/<name>/ from its state.pth (same options; --epochs may grow)")
    p.add_argument("--overwrite", action="store_true", help="delete the run already in model/<name>/ and start again")
    p.add_argument("--val_every", default=1, type=int, help="validate every this many epochs, and after the last")
    p.add_argument("--state_every", default=None, type=int,
                   help="write the full training state (state.pth) every this many epochs (not given: after the first "
                        "epoch, then after each that ends a minute or more after the last write); also after the last "
                        "epoch, and on Ctrl-C and SIGTERM")
    return p.parse_args(argv)
