"""The library the stage scripts at the top of the repository share. Each module owns one thing:

    cli          how a script talks to its user: shared flags, one-line errors (UserError)
    data         image names, transforms, datasets, the .mat layout handed from test.py to evaluate.py
    devices      where the arithmetic runs: CPU or GPU, reduced precision, torchrun processes
    runs         a run folder's life: model/<name>/ created, refused, saved, resumed
    evaluation/  the ranking protocol (metrics), same-person decisions (verification), ranking pictures
    search/      what search.py searches: image folders and footage, described and cached; people
                 detection; the HTML report
    synthetic/   synthetic people (a Market-1501-style tree) and synthetic footage, for the demo and tests
    training/    train_new.py's flags (options), batches (samplers), images (data), where a run starts
                 (start: ImageNet, --init_from, --resume) and the loop of epochs (loop)
    footage_crops  labelled footage cropped into a prepared tree (prepare.py --dataset mot)

The method itself, the network and its two losses, is model.py beside the scripts.
"""
