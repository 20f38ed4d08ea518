"""Which images an epoch's batches hold: the original's shuffled anchors (--sampler triplet) or P
identities x K images (--sampler pk), each epoch's the same after a resume."""
import torch
from torch.utils.data import DataLoader


def triplet_batches(n, batchsize, generator):
    """The original's batches: a shuffled order of all anchors, cut into full batches."""
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batchsize] for i in range(0, n - batchsize + 1, batchsize)]


def pk_batches(labels, batchsize, instances, generator):
    """Batches of batchsize // instances identities x `instances` images. Each identity's images
    are shuffled and dealt out in groups of K (drawn again when it has fewer than K); the groups
    are shuffled and packed, no identity twice in a batch."""
    by_label = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    groups = []
    for label in sorted(by_label):
        images = by_label[label]
        order = [images[j] for j in torch.randperm(len(images), generator=generator).tolist()]
        if len(order) < instances:
            extra = torch.randint(len(images), (instances - len(order),), generator=generator)
            order += [images[j] for j in extra.tolist()]
        groups += [(label, order[i:i + instances]) for i in range(0, len(order) - instances + 1, instances)]
    groups = [groups[j] for j in torch.randperm(len(groups), generator=generator).tolist()]
    per_batch, batches, current, seen = batchsize // instances, [], [], set()
    for label, group in groups:
        if label in seen:
            continue  # dropped: a batch holds each identity once, and the next epoch reshuffles
        current.append(group)
        seen.add(label)
        if len(current) == per_batch:
            batches.append([i for g in current for i in g])
            current, seen = [], set()
    return batches


def epoch_loader(dataset, args, epoch, device, train, skip=0, shard=None):
    """The loader of one epoch. Its batches and its workers' random numbers depend on the seed and
    the epoch alone, so an epoch replays the same after a resume; `skip` drops batches already
    done. Under torchrun each process loads its slice of every batch."""
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
    if not train:
        return DataLoader(dataset, batch_size=args.batchsize, num_workers=args.num_workers,
                          pin_memory=device.type == "cuda", generator=generator)
    if args.sampler == "pk":
        batches = pk_batches([label for _, label in dataset.samples], args.batchsize, args.instances, generator)
    else:
        batches = triplet_batches(len(dataset), args.batchsize, generator)
    return DataLoader(dataset, batch_sampler=[shard.take(b) for b in batches[skip:]], num_workers=args.num_workers,
                      pin_memory=device.type == "cuda", generator=generator)
