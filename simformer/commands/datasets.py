HELP = "list the registered datasets and whether their files are present"


def add_arguments(parser):
    pass


def run(args) -> int:
    import os

    from simformer.data.catalog import datasets_root, get_dataset, list_datasets, registry_path

    print(f"datasets root: {os.path.abspath(datasets_root())}   user registry: {registry_path()}")
    for name in list_datasets():
        info = get_dataset(name)
        present = os.path.isdir(info.image_root) and os.path.isdir(info.sem_seg_root)
        print(f"  {name:28s} family={info.family:16s} classes={info.num_classes:4d} "
              f"{'present' if present else 'missing'}  {info.image_root}")
    return 0
