HELP = "register your own dataset folder (images + single-channel PNG labels + classes.json/txt)"
DESCRIPTION = """Register a dataset in the detectron2/MaskFormer layout so configs can name it:

  ROOT/images/SPLIT/*.jpg|png      ROOT/annotations/SPLIT/*.png (class id per pixel, 255 = ignore)
  ROOT/classes.json (a list of names) or ROOT/classes.txt (one name per line)

  simformer register mydata_train --root /data/mydata --split train --family mydata
  simformer register mydata_val   --root /data/mydata --split val   --family mydata

The entry is saved in the user registry ($SIMFORMER_REGISTRY, default
DATASETS_ROOT/simformer_registry.yaml). Splits are made per family: `simformer split --dataset mydata`."""


def add_arguments(parser):
    parser.add_argument("name", help="dataset name to use in DATASETS.TRAIN / DATASETS.TEST")
    parser.add_argument("--root", required=True, help="dataset folder")
    parser.add_argument("--split", required=True, help="sub-folder of images/ and annotations/ (e.g. train, val)")
    parser.add_argument("--family", help="name shared by the splits of one dataset (default: ROOT's folder name)")
    parser.add_argument("--images", default="images", help="image folder name under ROOT")
    parser.add_argument("--labels", default="annotations", help="label folder name under ROOT")


def run(args) -> int:
    import os

    from simformer.data.catalog import get_dataset_dicts, register_folder, save_user_registration

    root = os.path.abspath(os.path.expanduser(args.root))
    entry = {"root": root, "split": args.split, "family": args.family or os.path.basename(root),
             "images": args.images, "labels": args.labels}
    info = register_folder(args.name, **entry)
    records = get_dataset_dicts(args.name)  # fails clearly on a broken layout before saving
    path = save_user_registration(args.name, entry)
    print(f"registered {args.name}: {len(records)} images, {info.num_classes} classes, family {info.family} -> {path}")
    return 0
