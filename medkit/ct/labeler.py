"""Rule-based labels of the CT observations in a report (training targets of the label heads).

The CT counterpart of ``medkit.cxr.labeler`` for ``CT_OBSERVATIONS``: an observation is positive
when one of its phrases occurs in a sentence without a negation cue before it in that sentence
("no", "without", "negative for", "free of", "absence of", "rather than", "normal" for size
findings...). Deliberately small: a site with its own labeler can put labels in the manifest
(``"labels": {"Hepatomegaly": 1, ...}``), which override these.

    python -m medkit.ct.labeler "Enlarged liver measuring 2.4 L. No ascites."
"""

from __future__ import annotations

import re
import sys

from medkit.ct.config import CT_OBSERVATIONS

PHRASES: dict[str, tuple[str, ...]] = {
    "Hepatomegaly": ("hepatomegaly", "enlarged liver", "liver is enlarged", "liver enlargement", "enlargement of the liver"),
    "Splenomegaly": ("splenomegaly", "enlarged spleen", "spleen is enlarged", "splenic enlargement"),
    "Hepatic Steatosis": ("steatosis", "fatty liver", "fatty infiltration", "hepatic fat", "low attenuation of the liver"),
    "Cirrhosis": ("cirrhosis", "cirrhotic", "nodular liver contour", "nodular contour of the liver"),
    "Liver Lesion": ("liver lesion", "hepatic lesion", "liver mass", "hepatic mass", "focal liver", "focal hepatic",
                     "hypodense lesion", "hypoattenuating lesion"),
    "Liver Cyst": ("liver cyst", "hepatic cyst", "cyst in the liver", "cystic liver"),
    "Hemangioma": ("hemangioma", "haemangioma"),
    "Liver Metastasis": ("liver metastas", "hepatic metastas", "metastases to the liver", "metastatic disease of the liver"),
    "Ascites": ("ascites", "free fluid", "peritoneal fluid"),
    "Cholelithiasis": ("cholelithiasis", "gallstone", "gall stone", "cholecystolithiasis"),
    "Renal Cyst": ("renal cyst", "kidney cyst", "cyst in the kidney", "cortical cyst"),
    "Pancreatic Lesion": ("pancreatic lesion", "pancreatic mass", "pancreatic cyst", "mass in the pancreas", "ipmn"),
}

_NEGATION = re.compile(r"\b(no|not|without|negative for|free of|absence of|absent|rather than|resolved|"
                       r"normal in size|normal size|unremarkable)\b")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.;!?])\s+|\n+", text.lower()) if s.strip()]


def label_ct_report(report: str) -> dict[str, int]:
    """{observation: 1 (mentioned, not negated) or 0} for every CT observation."""
    if not isinstance(report, str):
        raise ValueError(f"report must be a string, got {type(report).__name__}")
    out = {name: 0 for name in CT_OBSERVATIONS}
    for sent in _sentences(report):
        for name, phrases in PHRASES.items():
            for ph in phrases:
                i = sent.find(ph)
                if i < 0:
                    continue
                if not _NEGATION.search(sent[:i]) and not _NEGATION.search(sent[i:].split(",")[0][len(ph):]):
                    out[name] = 1
                break
    return out


def main(argv: list[str] | None = None) -> int:
    for text in argv if argv is not None else sys.argv[1:]:
        print({k: v for k, v in label_ct_report(text).items() if v})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
