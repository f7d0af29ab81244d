HELP = "predict the training images and write mixed labels (novel from predictions, base from GT) for re-training"
DESCRIPTION = """Re-training stage, step 1 (docs/method.md section 7):

  simformer pseudo-label --config configs/toyscenes/simformer.yaml --weights runs/x/model_final.pth --output runs/x/pseudo

For each training image: start at 255, give each novel class of the image-level label the
pixels predicted as it, then write the base GT over them. PNGs are written atomically as
OUT/<image_id>.png (existing ones are kept), and the pseudo-label quality (mIoU of the mixed
labels against the full GT, base / novel) is printed and saved to OUT/pseudo_labels.json.
Train on them with a retrain config: WEAKSHOT.PSEUDO_LABEL_DIR OUT (or use `simformer pipeline`).

--refine gfsam: the mixed labels go to OUT/mixed and each novel region is re-selected by GF-SAM
among the model's proposals, with a reference training image containing the class as support
(docs/gfsam.md); OUT holds the refined labels, and both qualities are reported."""


def add_arguments(parser):
    from simformer.retrain import REFINE_METHODS

    from . import add_config_argument, add_output_argument

    add_config_argument(parser)
    parser.add_argument("--weights", required=True)
    add_output_argument(parser, "out", required=True, help="folder for the mixed-label PNGs")
    parser.add_argument("--dataset", help="training set to label (default: DATASETS.TRAIN[0])")
    parser.add_argument("--refine", choices=REFINE_METHODS, default="none",
                        help="refine the novel regions with GF-SAM (keys FEWSHOT.GFSAM.*; docs/gfsam.md)")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")


def run(args) -> int:
    from simformer.engine.defaults import load_trained_model
    from simformer.retrain.pseudo_label import generate_pseudo_labels

    cfg, model, split, name = load_trained_model(args.config, args.weights, args.opts, args.dataset,
                                                 default_dataset="train")
    report = generate_pseudo_labels(model, cfg, split, args.out, name, refine=args.refine)
    q = report["quality"]
    if "quality_unrefined" in report:
        print(f"before GF-SAM refinement: novel mIoU {report['quality_unrefined']['novel_miou']}")
    print(f"pseudo labels in {args.out}: novel mIoU {q['novel_miou']}, base mIoU {q['base_miou']}, "
          f"labelled pixels {report['labelled_pixel_share']:.1f} %")
    return 0
