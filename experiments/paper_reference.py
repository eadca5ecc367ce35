"""The study's own numbers and the names of the paper table's rows (Khalil et al. 2025,
"Membership Inference Attacks Beyond Overfitting", Tables 2-4; ../shared/REFERENCE.md):
what experiments/paper_table.py sets its results beside. Kept with the experiment, not in the
library.
"""

# train acc / test acc / AUC / advantage (percent), from the study (shared/REFERENCE.md).
PAPER = {
    "none": ((99.97, 87.91, 60.27, 22.07), (97.76, 87.54, 57.27, 13.86)),
    "early_stopping": ((99.97, 87.93, 60.21, 21.96), (96.88, 89.58, 55.07, 10.40)),
    "l2_5e-4": ((99.99, 91.46, 57.11, 19.13), (94.91, 89.34, 53.25, 7.26)),
    "l2_1e-3": ((99.95, 89.61, 58.07, 20.52), (92.63, 88.37, 52.22, 4.87)),
    "l2_5e-3": ((60.35, 59.71, 50.06, 0.82), (77.76, 76.16, 50.92, 1.73)),
    "regdrop_0.25": ((99.85, 91.78, 56.00, 15.44), (90.02, 87.14, 51.87, 3.70)),
    "regdrop_0.5": ((91.97, 84.89, 53.61, 7.52), (86.52, 84.45, 51.44, 2.46)),
    "label_smoothing": ((99.99, 86.47, 67.33, 37.04), (99.15, 88.52, 59.43, 16.43)),
    "dp_sgd": ((59.51, 59.55, 50.00, 0.53), (61.71, 61.21, 50.36, 0.70)),
    "logit_reweighting": ((99.97, 87.91, 55.94, 11.89), None),
}
NAMES = {"none": "none", "early_stopping": "early stopping", "l2_5e-4": "L2 5e-4",
         "l2_1e-3": "L2 1e-3", "l2_5e-3": "L2 5e-3", "regdrop_0.25": "RegDrop 0.25",
         "regdrop_0.5": "RegDrop 0.5", "label_smoothing": "label smoothing", "dp_sgd": "DP-SGD",
         "logit_reweighting": "logit reweighting (on none)"}

DEFENSE_NAMES = {"curriculum": "curriculum learning", "augmentation": "data augmentation",
                 "ensemble": "ensemble (disjoint partitions)",
                 "ensemble_bagging": "ensemble (bagging)", "unlearning": "machine unlearning"}
UNLEARN_NAMES = {"none": "no unlearning (the `none` models)", "retrain": "retrain from scratch",
                 "sisa": "SISA (exact)", "finetune": "fine-tune on retained",
                 "gradient_ascent": "gradient ascent on forgotten"}
