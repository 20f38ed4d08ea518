"""The loop of epochs and steps: how the network learns (SGD, the learning-rate schedule, the
warm-up, the moving average), one epoch's pass with the paper's loss, validation by the evaluation
protocol, the log line, checkpoints, a stop on Ctrl-C or SIGTERM, and the thresholds of search.py.
"""
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from model import DIFFERENT, SAME, Verification, build_model, descriptors, head_weights, objective, verif_net
from reid.cli import UserError
from reid.convolutions import few_pixels_as_products
from reid.devices import Arithmetic
from reid.evaluation.metrics import Side, rank_queries, summarize
from reid.evaluation.verification import calibrate, calibrate_on_people, save_thresholds
from reid.runs import StopRequest, agree_to_stop, draw_curves, save_state, save_weights
from reid.training.samplers import epoch_loader


def check_batches(args, shard):
    if args.val_every < 1 or (args.state_every is not None and args.state_every < 1):
        raise UserError("--val_every and --state_every count epochs: give 1 or more")
    if not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema_decay {args.ema_decay}: give 0 (no average) or a decay below 1, such as 0.999")
    # the warm-up ends before the rate first falls: at --decay_epoch, or with the cosine at --epochs
    warm_limit = "epochs" if args.lr_schedule == "cosine" else "decay_epoch"
    if not 0 <= args.warm_epoch <= getattr(args, warm_limit):
        raise UserError(f"--warm_epoch {args.warm_epoch}: give 0 (no warm-up) up to --{warm_limit} "
                        f"{getattr(args, warm_limit)}")
    if args.batchsize % shard.world:
        raise UserError(f"--batchsize {args.batchsize} is the total over {shard.world} processes; make it a multiple "
                        "of it")
    if args.sampler == "pk" and (args.instances < 2 or (args.batchsize // args.instances) % shard.world
                                 or args.batchsize % args.instances):
        raise UserError(f"--sampler pk needs --instances of 2 or more dividing --batchsize {args.batchsize} into "
                        f"identities that split evenly over {shard.world} process(es)")


def cosine_factor(args, epoch):
    """--lr_schedule cosine: the multiplier of every initial learning rate during `epoch` (0-based):
    1 at the first epoch, falling along half a cosine, 0 where a next epoch after the last would be."""
    return 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))


@dataclass
class Training:
    """What training changes step by step, and what state.pth keeps for a resume."""
    net: Verification  # the network of model.py and its verification head
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None  # --ema_decay's moving average of net

    def parts(self):
        """{name: part} as state.pth keys them (runs.save_state, restore_state)."""
        parts = {"model": self.net.model, "verif": self.net.verif, "optimizer": self.optimizer,
                 "scheduler": self.scheduler, "scaler": self.scaler}
        return parts | ({"ema": self.ema} if self.ema is not None else {})

    @property
    def kept(self):
        """What is validated, saved and calibrated: the moving average where one is kept."""
        return self.ema.module if self.ema is not None else self.net

    def start_average(self, decay):
        """--ema_decay: the moving average of the network and its head, which starts as their
        current weights (an --init_from run's where loaded) and takes in each training step. Its
        BatchNorm statistics are averaged too (use_buffers), so it needs no pass over the data to
        set them."""
        self.ema = AveragedModel(self.net, use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))


@dataclass
class Progress:
    """How far a run has come: the curves so far, the epoch in progress (0-based) and its running
    totals where it stopped in the middle (runs.restore_state)."""
    history: dict = field(default_factory=lambda: {"train": [], "val": []})
    epoch: int = 0
    sums: dict | None = None


def build_training(args, nclasses, device, pretrained):
    """Training: the network, the verification head and how they learn: SGD with Nesterov
    momentum, the new layers at lr and a pretrained backbone at 0.1 x lr, every rate x0.1 after
    --decay_epoch (or along a cosine)."""
    model = build_model({**vars(args), "nclasses": nclasses}, pretrained=pretrained).to(device)
    if device.type == "cpu":
        # the last stages' convolutions over a pixel or two: as matrix products, about twice as fast at 32 x 16
        few_pixels_as_products(model)
    verif = verif_net().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # a pretrained backbone (ImageNet's, or an --init_from run's) is fine-tuned gently; one trained from
    # scratch has nothing to preserve
    backbone_lr = 0.1 * args.lr if args.pretrained or args.init_from else args.lr
    optimizer = torch.optim.SGD([
        {"params": model.model.parameters(), "lr": backbone_lr},
        {"params": model.classifier.parameters(), "lr": args.lr},
        {"params": verif.parameters(), "lr": args.lr},
    ], momentum=0.9, weight_decay=5e-4, nesterov=True)
    if args.lr_schedule == "cosine":
        # LambdaLR computes each epoch's rate from the initial one, so the warm-up's own setting of
        # the rates within an epoch does not carry into the next
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: cosine_factor(args, epoch))
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.decay_epoch, gamma=0.1)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler then does nothing)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    return Training(Verification(model, verif), optimizer, scheduler, scaler)


def warm_up(args, epoch, steps):
    """The multiplier of every initial learning rate at each step of `epoch` (`steps` steps) during
    --warm_epoch: the schedule's, times a ramp that rises linearly from 0.1 and is 1 at the
    warm-up's last step; None after it. It depends on the epoch and step alone, so a resumed epoch
    replays the same rates."""
    if epoch >= args.warm_epoch:
        return None
    # the step schedule's rate is the initial one until --decay_epoch, which the warm-up never passes
    scheduled = cosine_factor(args, epoch) if args.lr_schedule == "cosine" else 1.0
    return lambda step: scheduled * (0.1 + 0.9 * (epoch + (step + 1) / steps) / args.warm_epoch)


SUMS = ("steps", "total", "loss_id_sum", "loss_verif_sum", "id_correct", "verif_correct")


def forward(net, batch, args, arithmetic):
    """(logits, label, pos_score, neg_score, loss_id, loss_verif) of a batch, in the run's arithmetic."""
    with arithmetic.autocast():
        logits, label, pos_score, neg_score = net(batch)
        return (logits, label, pos_score, neg_score,
                *objective(logits, label, pos_score, neg_score, args.alpha, args.label_smoothing))


def run_epoch(net, loader, device, args, arithmetic, *, desc, optimizer=None, scaler=None, sums=None, stop=None,
              shard=None, lr_scale=None, after_step=None):
    """One pass over `loader`; trains when an optimizer is given, each step's learning rates
    scaled by lr_scale(step) where given (warm_up), calling after_step() after each step where
    given. `sums` carries the running totals of an epoch resumed in the middle. A training step
    whose loss is not finite in reduced precision is done again in fp32, and the run goes on in
    fp32 (in one process; under torchrun the run stops, naming the precision). Returns the totals,
    summed over all processes."""
    training = optimizer is not None
    net.train(training)
    sums = {k: 0 for k in SUMS} | (sums or {})
    local = {k: 0 for k in SUMS}
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", disable=shard is not None and not shard.main)
    with torch.set_grad_enabled(training):
        for batch in bar:
            batch = [b.to(device, non_blocking=True) for b in batch]
            if args.channels_last:
                batch = [b.contiguous(memory_format=torch.channels_last) if b.dim() == 4 else b for b in batch]
            where = f"{desc} step {sums['steps'] + local['steps'] + 1}"
            redo = training and arithmetic.reduced and (shard is None or shard.world == 1)
            # the BatchNorm statistics a failed step took in go back before it is done again
            kept = [b.clone() for b in net.buffers()] if redo else None
            logits, label, pos_score, neg_score, loss_id, loss_verif = forward(net, batch, args, arithmetic)
            precision = arithmetic.precision
            if redo and not torch.isfinite(loss_id + loss_verif):
                failed = (loss_id + loss_verif).item()
                for b, k in zip(net.buffers(), kept):
                    b.copy_(k)
                precision = "fp32"
                logits, label, pos_score, neg_score, loss_id, loss_verif = forward(net, batch, args,
                                                                                   Arithmetic(device, precision))
                if torch.isfinite(loss_id + loss_verif):
                    arithmetic.fall_back(f"the loss became {failed} at {where} under --precision "
                                         f"{arithmetic.precision} and not in fp32, which did this step again")
            loss = loss_id + loss_verif
            stopping = agree_to_stop(loss, where, stop, shard, precision)
            if training:
                if lr_scale is not None:
                    scale = lr_scale(sums["steps"] + local["steps"])
                    for group in optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * scale
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if after_step is not None:
                    after_step()
            n = label.size(0)
            local["steps"] += 1
            local["total"] += n
            local["loss_id_sum"] += loss_id.item() * n
            local["loss_verif_sum"] += loss_verif.item() * n
            local["id_correct"] += (logits.argmax(1) == label).sum().item()
            local["verif_correct"] += ((pos_score.argmax(1) == SAME).sum().item()
                                       + (neg_score.argmax(1) == DIFFERENT).sum().item())
            bar.set_postfix(loss=f"{(local['loss_id_sum'] + local['loss_verif_sum']) / local['total']:.4f}")
            if stopping:
                break
    if shard is not None and shard.world > 1 and training:
        totals = torch.tensor([float(local[k]) for k in SUMS], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        local = {k: (v if k.endswith("_sum") else int(v)) for k, v in zip(SUMS, totals.tolist())}
        local["steps"] //= shard.world
    return {k: sums[k] + local[k] for k in SUMS}


def epoch_stats(sums):
    total = max(sums["total"], 1)
    loss_id, loss_verif = sums["loss_id_sum"] / total, sums["loss_verif_sum"] / total
    return {"loss": loss_id + loss_verif, "loss_id": loss_id, "loss_verif": loss_verif,
            "id_acc": sums["id_correct"] / total, "verif_acc": sums["verif_correct"] / (2 * total)}


def stats_text(phase, stats):
    return (f"{phase} loss {stats['loss']:.4f} (id {stats['loss_id']:.4f} + verif {stats['loss_verif']:.4f}) "
            f"id acc {stats['id_acc']:.4f} verif acc {stats['verif_acc']:.4f}")


def retrieval_features(model, retrieval, device, precision):
    """The Sides of the val queries, then of their training gallery."""
    return [Side(descriptors(model, loader, device, f"val {name}", precision), labels, cams)
            for name, (loader, labels, cams) in retrieval.items()]


def val_retrieval(model, retrieval, device, precision):
    """Rank@1 and mAP of the val queries against their training gallery, by the evaluation protocol."""
    query, gallery = retrieval_features(model, retrieval, device, precision)
    found = summarize(rank_queries(query, gallery)) if len(gallery) else {"Rank@1": 0.0, "mAP": 0.0}
    return {k: found[k] for k in ("Rank@1", "mAP")}


def calibrate_thresholds(folder, net, retrieval, calibration, device, args, precision):
    """thresholds.yaml for search.py: the same/different thresholds of cosine and of the head at
    each false-accept rate, and the calibration of each into P(same), fitted on the pairs of
    calibration/ (identities never trained on) where the tree has it, else on val queries against
    training images of other cameras (identities trained on)."""
    head = head_weights(net.verif)
    if calibration is not None:
        loader, ids, cams = calibration
        f = descriptors(net.model, loader, device, "calibration", precision)
        found = calibrate_on_people(Side(f, ids, cams), head, "last")
    else:
        query, gallery = retrieval_features(net.model, retrieval, device, precision)
        found = calibrate(query, gallery, head=head)
        pairs = (f"{len(query)} val images x {len(gallery)} training images of the same identities "
                 f"({found['positive_pairs']} positive, {found['negative_pairs']} negative pairs)")
        found = {"checkpoint": "last", "pairs": pairs, "optimistic": args.train_all, "identities_trained_on": True,
                 **found}
    save_thresholds(folder, found)
    pairs = found["pairs"]
    print(f"thresholds for search.py at FAR {', '.join(k.split('=')[1] for k in found['cosine'])} on {pairs}: cosine "
          f"{', '.join(f'{t:.4f}' for t in found['cosine'].values())}; P(same) "
          f"{', '.join(f'{t:.4f}' for t in found['head'].values())}"
          + ("\nnote: with --train_all the val images were trained on: these thresholds are optimistic (they accept "
             "fewer unseen negatives than their FAR says)" if args.train_all and calibration is None else ""))
    unresolved = [far for far in found["cosine"] if found["negative_pairs"] * float(far.split("=")[1]) < 1]
    if unresolved:
        print(f"note: {found['negative_pairs']} negative pairs cannot tell FAR {', '.join(unresolved)} apart from 0: "
              f"the threshold there lies just above the highest negative")


# train.png is redrawn, and state.pth written where --state_every is not given, after an epoch that
# ends this many seconds after the last time, and after the first and the last epoch: each takes a
# few tenths of a second on a CPU, a share of a short epoch (the demo's take 8-15 s) worth saving
CURVES_EVERY_S = 30
STATE_EVERY_S = 60


def train_epochs(training, data, args, progress, *, arithmetic, device, shard, folder):
    """Train from `progress` to --epochs: each epoch's steps, then (in the main process) its
    validation, its line in train.log, train.png, a net_<epoch>.pth every 10 epochs and state.pth
    (every --state_every epochs, or by STATE_EVERY_S). Ctrl-C or SIGTERM saves the state and ends
    the script (runs.StopRequest)."""
    trained = torch.nn.parallel.DistributedDataParallel(training.net) if shard.world > 1 else training.net
    trained = torch.compile(trained) if args.compile else trained
    kept, history, sums = training.kept, progress.history, progress.sums
    written = {"curves": -math.inf, "state": -math.inf}  # when each was last written
    with StopRequest() as stop:
        for epoch in range(progress.epoch, args.epochs):
            start, done_before = time.time(), sums["total"] if sums else 0
            step = f"{epoch + 1}/{args.epochs}"
            skip = sums["steps"] if sums else 0
            loader = epoch_loader(data.phases["train"], args, epoch, device, train=True, skip=skip, shard=shard)
            average = (lambda: training.ema.update_parameters(training.net)) if training.ema is not None else None
            totals = run_epoch(trained, loader, device, args, arithmetic, desc=f"train {step}",
                               optimizer=training.optimizer, scaler=training.scaler, sums=sums, stop=stop, shard=shard,
                               lr_scale=warm_up(args, epoch, skip + len(loader)), after_step=average)
            if stop.signum is not None:
                if shard.main:
                    save_state(folder, training.parts(), epoch=epoch, sums=totals, history=history)
                stop.exit(folder, f"at epoch {epoch + 1} step {totals['steps']}", shard.main)
            stats = epoch_stats(totals)
            history["train"].append(dict(stats, epoch=epoch + 1))
            # anchors (training items) per second, loading included, over all processes
            line = (f"epoch {step} | {stats_text('train', stats)} "
                    f"{(totals['total'] - done_before) / (time.time() - start):.1f} samples/s")
            validate = (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs
            if "val" in data.phases and shard.main and validate:  # validation runs in the main process only
                val_loader = epoch_loader(data.phases["val"], args, epoch, device, train=False)
                stats = epoch_stats(run_epoch(kept, val_loader, device, args, arithmetic, desc=f"val {step}"))
                stats.update(val_retrieval(kept.model, data.retrieval, device, arithmetic.precision))
                history["val"].append(dict(stats, epoch=epoch + 1))
                line += f" | {stats_text('val', stats)} Rank@1 {stats['Rank@1']:.4f} mAP {stats['mAP']:.4f}"
            sums = None
            line += f" | lr {training.optimizer.param_groups[1]['lr']:g} | {time.time() - start:.1f}s"
            training.scheduler.step()
            if shard.main:
                print(line)
                with open(os.path.join(folder, "train.log"), "a") as log:
                    log.write(line + "\n")
                last = epoch + 1 == args.epochs or stop.signum is not None
                if last or time.time() - written["curves"] >= CURVES_EVERY_S:
                    draw_curves(os.path.join(folder, "train.png"), history)
                    written["curves"] = time.time()
                if epoch % 10 == 9:
                    save_weights(folder, epoch, kept.model, kept.verif)
                due = ((epoch + 1) % args.state_every == 0 if args.state_every
                       else time.time() - written["state"] >= STATE_EVERY_S)
                if due or last:
                    save_state(folder, training.parts(), epoch=epoch + 1, sums=None, history=history)
                    written["state"] = time.time()
            if shard.world > 1:
                torch.distributed.barrier()  # the others wait while the main process validates and writes
            if stop.signum is not None:
                stop.exit(folder, f"after epoch {epoch + 1}", shard.main)
