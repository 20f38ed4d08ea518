"""Where a run starts from: ImageNet's weights (or none), or another trained run (--init_from),
whose network and input size it takes over."""
import os

from model import IDENTITY_CLASSIFIER, load_trained, load_verif
from reid.cli import UserError
from reid.runs import MODEL_ROOT, checkpoint_path, load_opts, run_dir

# The options that shape the network and the images it learns from, and their defaults: an
# --init_from run's are taken over where not given
ARCHITECTURE = {"use_dense": False, "stride": 2, "height": 256, "width": 128}


def find_run(given, flag="--init_from"):
    """The folder of the run `flag` names: a run folder as given (model/<name>), else model/<given>."""
    for folder in (given, run_dir(given)):
        if os.path.isfile(os.path.join(folder, "opts.yaml")):
            return folder
    raise UserError(f"{flag} {given}: neither {os.path.join(given, 'opts.yaml')} nor "
                    f"{os.path.join(run_dir(given), 'opts.yaml')} exists; give a run folder (model/<name>) or the name "
                    f"of a run under {MODEL_ROOT}/ of the current folder")


def start_from(args, folder):
    """(folder, options, flags taken over) of the run --init_from names, or None; fills --use_dense,
    --stride, --height and --width where not given: from that run, or (--resume) from a run that was started
    from one, else the defaults. Exits with one line where a given one contradicts the run's."""
    if args.init_from and args.resume:
        raise UserError(f"--init_from starts a new run from another run's weights and --resume continues {folder} "
                        f"from its own state; drop --init_from to resume (the run remembers where it started from), or "
                        f"--resume to start anew")
    source, taken = None, {}
    if args.init_from:
        source = find_run(args.init_from)
        taken = load_opts(source)
        if not os.path.isfile(checkpoint_path(source, "last")):
            raise UserError(f"--init_from {source} has no net_last.pth (its training has not finished): finish it "
                            f"(train_new.py --name {os.path.basename(source)} --resume) or start from another run")
        if taken.get("original") and taken.get("use_dense"):
            raise UserError(f"--init_from {source} is a DenseNet-121 run of the original code, which pools its last "
                            "feature map without the ReLU this repository's DenseNet applies, so its features would "
                            f"not carry over; start from a ResNet-50 run or from ImageNet")
        # --use_dense is given only as True: it contradicts a ResNet-50 run
        conflicts = ["--use_dense (the run is ResNet-50)" if k == "use_dense" else
                     f"--{k} {getattr(args, k)} (the run's: {taken.get(k)})"
                     for k, default in ARCHITECTURE.items()
                     if getattr(args, k) is not None and getattr(args, k) != taken.get(k, default)]
        if conflicts:
            raise UserError(f"--init_from {source} keeps that run's network and input size, which "
                            f"{', '.join(conflicts)} contradict; drop them (the run's are taken over) or start from "
                            f"another run")
        args.init_from = source
    elif args.resume and os.path.isfile(os.path.join(folder, "opts.yaml")):
        saved = load_opts(folder)
        if saved.get("init_from"):  # what it took over was not given on its command line either
            args.init_from, taken = saved["init_from"], saved
    given = {k for k in ARCHITECTURE if getattr(args, k) is not None}
    for k, default in ARCHITECTURE.items():
        if k not in given:
            setattr(args, k, taken.get(k, default))
    return None if source is None else (source, taken, sorted(set(ARCHITECTURE) - given))


def init_weights(net, source, opts, taken_over, nclasses):
    """Load the --init_from run's network, but its identity classifier, and its verification head into
    `net` (model.Verification); the line that says what was loaded."""
    # the original code's runs keep their number of classes in the checkpoint: load_trained reads it
    trained, trained_opts = load_trained(source)  # exits with one line where the checkpoint does not fit
    state = net.model.state_dict()
    state.update({k: v for k, v in trained.state_dict().items() if not k.startswith(IDENTITY_CLASSIFIER)})
    net.model.load_state_dict(state)
    verif = load_verif(source, fix=f"start from another run than {source}")
    if verif is not None:
        net.verif.load_state_dict(verif.state_dict())
    # the backbone is named only where it is not the default (ResNet-50, stride 2); the input size always
    flags = " ".join(f"--{k}" + ("" if k == "use_dense" else f" {opts[k]}") for k in taken_over
                     if k not in ("use_dense", "stride") or opts[k] != ARCHITECTURE[k])
    head = "verification head of verif_last.pth" if verif is not None else "a new verification head (it saved none)"
    return (f"starting from {source}: backbone and bottleneck of net_last.pth, {head}"
            + f", a new identity classifier for {nclasses} ids (the run's had {trained_opts['nclasses']})"
            + (f"; its {flags} taken over" if flags else ""))
