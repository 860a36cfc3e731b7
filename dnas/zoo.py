"""The papers' models and their published numbers, beside the names that build them.

Sources: Huang et al. (CVPR 2017) Table 2; Zagoruyko & Komodakis (BMVC 2016) Tables 2-6. The
exact parameter counts are for 10 classes and are checked by ``tests/test_zoo.py`` against the
built models. Errors are test error in %, at the papers' full training recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperModel:
    source: str
    params_exact: int | None  # 10 classes, as published or as torchvision reports
    params_rounded: str  # the table's "Params" column
    errors: dict[str, float] = field(default_factory=dict)  # dataset column -> test error %

    @property
    def params_exact_source(self) -> str:
        """Where ``params_exact`` comes from: the papers print rounded counts only."""
        if self.source.startswith("torchvision"):
            return "torchvision's weights metadata (num_params)"
        return "computed: the built model, counted (the paper prints only the rounded figure)"


_DN = "Huang et al. 2017, Table 2"
_WRN = "Zagoruyko & Komodakis 2016"

PAPER_MODELS: dict[str, PaperModel] = {
    "densenet-40": PaperModel(
        _DN,
        1_019_722,
        "1.0M",
        {"C10": 7.00, "C10+": 5.24, "C100": 27.55, "C100+": 24.42, "SVHN": 1.79},
    ),
    "densenet-100": PaperModel(
        _DN,
        6_979_642,
        "7.0M",
        {"C10": 5.77, "C10+": 4.10, "C100": 23.79, "C100+": 20.20, "SVHN": 1.67},
    ),
    "densenet-100-k24": PaperModel(
        _DN,
        27_249_082,
        "27.2M",
        {"C10": 5.83, "C10+": 3.74, "C100": 23.42, "C100+": 19.25, "SVHN": 1.59},
    ),
    "densenet-bc-100": PaperModel(
        _DN,
        769_162,
        "0.8M",
        {"C10": 5.92, "C10+": 4.51, "C100": 24.15, "C100+": 22.27, "SVHN": 1.76},
    ),
    "densenet-bc-250-k24": PaperModel(
        _DN,
        15_324_406,
        "15.3M",
        {"C10": 5.19, "C10+": 3.62, "C100": 19.64, "C100+": 17.60, "SVHN": 1.74},
    ),
    "densenet-bc-190-k40": PaperModel(_DN, 25_624_430, "25.6M", {"C10+": 3.46, "C100+": 17.18}),
    "densenet121": PaperModel("torchvision DenseNet121_Weights", 7_978_856, "8.0M"),
    "densenet161": PaperModel("torchvision DenseNet161_Weights", 28_681_000, "28.7M"),
    "densenet169": PaperModel("torchvision DenseNet169_Weights", 14_149_480, "14.1M"),
    "densenet201": PaperModel("torchvision DenseNet201_Weights", 20_013_928, "20.0M"),
    "densenet264": PaperModel("Huang et al. 2017, Table 1", None, ""),
    "wrn-40-1": PaperModel(_WRN + ", Table 4", None, "0.6M", {"C10+": 6.85, "C100+": 30.89}),
    "wrn-40-2": PaperModel(_WRN + ", Table 4", 2_243_546, "2.2M", {"C10+": 5.33, "C100+": 26.04}),
    "wrn-40-4": PaperModel(_WRN + ", Table 5", 8_949_210, "8.9M", {"C10+": 4.53, "C100+": 21.18}),
    "wrn-16-4": PaperModel(_WRN + ", Table 4", 2_748_890, "2.7M", {"C10+": 5.02, "C100+": 24.03}),
    "wrn-16-8": PaperModel(_WRN + ", Table 5", None, "11.0M", {"C10+": 4.27, "C100+": 20.43}),
    "wrn-22-8": PaperModel(_WRN + ", Table 4", None, "17.2M", {"C10+": 4.38, "C100+": 21.22}),
    "wrn-28-10": PaperModel(
        _WRN + ", Table 5", 36_479_194, "36.5M", {"C10+": 4.00, "C100+": 19.25}
    ),
    "wrn-28-10-drop0.3": PaperModel(
        _WRN + ", Table 6", 36_479_194, "36.5M", {"C10+": 3.89, "C100+": 18.85}
    ),
    "wrn-40-2-b131": PaperModel(_WRN + ", Table 2", None, "1.4M", {"C10+": 6.06}),
    "wrn-40-2-b31": PaperModel(_WRN + ", Table 2", None, "1.2M", {"C10+": 5.78}),
    "wrn-40-2-b13": PaperModel(_WRN + ", Table 2", None, "1.3M", {"C10+": 6.42}),
    "wrn-40-2-b311": PaperModel(_WRN + ", Table 2", None, "1.3M", {"C10+": 5.86}),
    "wrn-28-2": PaperModel(_WRN + ", Table 2", None, "1.5M", {"C10+": 5.73}),
    "wrn-22-2-b313": PaperModel(_WRN + ", Table 2", None, "1.1M", {"C10+": 5.78}),
    "wrn-40-2-b3": PaperModel(_WRN + ", Table 3 (l=1)", None, "", {"C10+": 6.69}),
    "wrn-40-2-b333": PaperModel(_WRN + ", Table 3 (l=3)", None, "", {"C10+": 5.65}),
    "wrn-40-2-b3333": PaperModel(_WRN + ", Table 3 (l=4)", None, "", {"C10+": 5.93}),
}

# dnas dataset name -> the papers' column for the same data with standard augmentation.
DATASET_COLUMN = {"cifar10": "C10+", "cifar100": "C100+", "svhn": "SVHN"}
