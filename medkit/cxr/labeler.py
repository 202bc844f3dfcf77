"""Rule-based CheXpert-style labeler: free-text chest X-ray report -> 14 observation labels.

The labels feed three parts of MedKit: teacher targets for the disease heads, the disease list
that queries the knowledge graph, and the clinical-efficacy metrics (precision / recall / F1 of
the observations found in a generated report against those of the reference report).

Method (after Irvin et al., "CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels
and Expert Comparison", AAAI 2019, and Peng et al., "NegBio: a high-performance tool for
negation and uncertainty detection in radiology reports", AMIA 2018 Summits). The phrase lists
and rules below are our own; they use regular expressions instead of a dependency parse.

1. Normalise: lower-case, drop the ``XXXX`` de-identification tokens (Open-i), expand ``vs.``.
2. Split the report into sentences (``.``, ``!``, ``?``, line breaks), then each sentence into
   clauses at boundary words (``but``, ``however``, ``although``, ``except``, ``which``,
   ``where``, ``there is``, ``, with``, ``and the``, ``;``, ``:``, ...). A cue never reaches
   across a clause boundary.
3. Mentions. For each observation, in this order within a clause: ``UNCERTAIN_PHRASES``
   (hedged by themselves: "borderline heart size") give at most UNCERTAIN; ``NORMAL_PHRASES``
   (negative without a negation word: "heart size is normal", "cardiomediastinal silhouette
   within normal limits", "lungs are clear", "costophrenic angles are sharp") give NEGATIVE;
   ``MENTIONS`` are classified by cues. Text matched by an earlier table, or by ``EXCLUSIONS``
   ("pericardial effusion" is not a pleural effusion), is masked for the later ones.
4. Cues. ``PSEUDO_CUES`` ("no change in", "not significantly changed") are masked first, then
   ``UNCERTAINTY_CUES`` ("may", "possible", "probable", "cannot be excluded", "versus",
   "suggest", "concerning for", "borderline", ...), ``HYPOTHETICAL_CUES`` ("if", "to evaluate
   for", "to exclude") and ``NEGATION_CUES`` ("no", "not", "without", "negative for", "free
   of", "clear of", "absence of", "resolved", "removal of", ...). The cue nearest before the
   end of a mention decides, so "no focal consolidation, pneumothorax or effusion" negates all
   three and "no pneumothorax; possible small effusion" hedges only the effusion. Exceptions:
   an inferential cue ("to suggest", "concerning for") inside a negated clause keeps the
   negation ("no focal opacity to suggest pneumonia" is NEGATIVE for Pneumonia); a
   hypothetical cue drops the mention ("if there is concern for fracture, ..."); a finite verb
   followed by a comma or "and" closes a negation's scope ("no acute disease is seen,
   cardiomegaly is stable"). With no cue before it, a mention can still be hedged or negated
   from behind, in its clause and without crossing a comma: ``POST_UNCERTAINTY`` ("pneumonia
   cannot be excluded", "atelectasis versus scarring", "... is in the differential") and
   ``POST_NEGATION`` ("pneumothorax is not seen", "effusions are absent", "... has resolved").
5. Aggregate per observation over the report: POSITIVE beats UNCERTAIN beats NEGATIVE beats
   NOT_MENTIONED (CheXpert's rule). "No Finding" is POSITIVE when none of the 12 pathologies
   (all observations but "No Finding" and "Support Devices") is POSITIVE or UNCERTAIN, and
   NEGATIVE otherwise; an empty report is therefore No Finding POSITIVE. There is no
   parent/child propagation (a Consolidation does not set Lung Opacity), as in CheXpert.

Decisions (where radiology usage leaves a choice):
- "Lungs are clear" is NEGATIVE for Lung Opacity, Consolidation, Pneumonia and Edema (all
  opacities that clear lungs rule out); not for Atelectasis ("lungs are otherwise clear"
  often follows "bibasilar atelectasis") nor Lung Lesion (calcified granulomas in clear lungs).
- Granulomas, calcified nodules / densities and nodular opacities are Lung Lesion POSITIVE
  (benign nodules are still nodules); a nodular opacity is also Lung Opacity, a calcified
  density is not. "Granulomatous disease" alone is no mention (it usually means calcified
  lymph nodes), nor is "prior granulomatous infection" a Pneumonia.
- Interstitial markings / opacities / prominence, scarring and fibrosis are Lung Opacity, not
  Edema: in Open-i they are mostly chronic ("chronic interstitial markings, no typical findings
  of pulmonary edema"). Interstitial edema, vascular congestion, engorgement and vascular
  prominence are Edema. Pleural scarring, thickening and plaques are Pleural Other.
- Blunting of a costophrenic angle is Pleural Effusion.
- A tortuous or ectatic aorta is NOT Enlarged Cardiomediastinum (an ageing change, not
  widening); mediastinal widening, prominence or a mediastinal mass is.
- An enlarged cardiomediastinal silhouette is Enlarged Cardiomediastinum POSITIVE and
  Cardiomegaly UNCERTAIN (usually, not surely, the heart); normal statements about the
  cardiomediastinal silhouette are NEGATIVE for both.
- "Borderline" heart size is Cardiomegaly UNCERTAIN; heart size "at the upper limits of
  normal" / "top normal" is NEGATIVE (it is still normal: Open-i's indexers filed it as
  cardiomegaly in only 6 of the 60 train reports that say it).
- "Sternotomy" counts as Support Devices (in these reports it stands for the sternotomy
  wires), as do surgical clips and the de-identified "XXXX-A-XXXX" (Port-A-Cath). Breast
  implants, nipple markers and bullet fragments are not support devices.
- "Consistent with" and "compatible with" are not uncertainty cues (used for confident
  reads); "likely", "probable", "unlikely" are.
- "No acute bony abnormality" is not a Fracture mention: only fracture words count.

Agreement with Open-i MeSH (train split, 2069 studies)
------------------------------------------------------
Reference: the Open-i MeSH major terms mapped to observations (``MESH_TO_OBSERVATION`` in the
benchmark); labeler positive = POSITIVE or UNCERTAIN; text = findings + impression. MeSH is an
independent human indexing, not a gold standard: it leaves out hedged findings (hence the low
Pneumonia precision: 39 of the 71 positives are "may represent pneumonia"-type hedges),
often skips sternotomy wires and surgical clips (Support Devices), and files an "enlarged
cardiomediastinal silhouette" under cardiomegaly. "No Finding" is compared with "no mapped
pathology term"; the last row compares it with Open-i's literal "normal" (no term at all,
spondylosis and hiatal hernia included), which is stricter than CheXpert's definition.

| observation | n MeSH + | n labeler + | precision | recall | F1 | kappa |
|---|---:|---:|---:|---:|---:|---:|
| No Finding | 1263 | 1236 | 0.989 | 0.968 | 0.979 | 0.946 |
| Enlarged Cardiomediastinum | 13 | 16 | 0.500 | 0.615 | 0.552 | 0.549 |
| Cardiomegaly | 191 | 191 | 0.990 | 0.990 | 0.990 | 0.988 |
| Lung Lesion | 238 | 270 | 0.856 | 0.971 | 0.909 | 0.897 |
| Lung Opacity | 407 | 433 | 0.896 | 0.953 | 0.924 | 0.904 |
| Edema | 50 | 59 | 0.814 | 0.960 | 0.881 | 0.878 |
| Consolidation | 19 | 26 | 0.731 | 1.000 | 0.844 | 0.843 |
| Pneumonia | 28 | 71 | 0.394 | 1.000 | 0.566 | 0.557 |
| Atelectasis | 183 | 214 | 0.850 | 0.995 | 0.917 | 0.908 |
| Pneumothorax | 10 | 9 | 1.000 | 0.900 | 0.947 | 0.947 |
| Pleural Effusion | 95 | 99 | 0.949 | 0.989 | 0.969 | 0.968 |
| Pleural Other | 28 | 25 | 0.840 | 0.750 | 0.792 | 0.790 |
| Fracture | 60 | 69 | 0.826 | 0.950 | 0.884 | 0.880 |
| Support Devices | 157 | 200 | 0.760 | 0.968 | 0.852 | 0.838 |
| No Finding (MeSH 'normal') | 682 | 1236 | 0.549 | 0.994 | 0.707 | 0.491 |

Macro F1 over the 14 observations 0.858 (0.884 with ``--uncertain-as 0``, where UNCERTAIN
counts as negative). The rules were tuned on these train reports only; the val split (296
studies, not used for tuning) gives macro F1 0.86. Command::

    python benchmarks/labeler_agreement.py --data /work/shared/data --split train --out agreement.json

Speed: pure Python regular expressions, about 2 ms per report on one CPU core (the 2,069
train reports in 4.2-4.7 s), no model and no download.

Command::

    python -m medkit.cxr.labeler "Mild cardiomegaly. No pneumothorax or pleural effusion."
"""

from __future__ import annotations

import enum
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import NamedTuple

from medkit.core.text import DEIDENTIFIED

logger = logging.getLogger(__name__)

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Observations that are not pathologies: they do not veto "No Finding".
_NOT_PATHOLOGY = frozenset({"No Finding", "Support Devices"})


class Status(str, enum.Enum):
    """Label of one observation in one report."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not_mentioned"


# Aggregation order over a report: a higher rank wins (CheXpert: positive > uncertain > negative).
_RANK = {Status.NOT_MENTIONED: 0, Status.NEGATIVE: 1, Status.UNCERTAIN: 2, Status.POSITIVE: 3}

# ---------------------------------------------------------------------------------------------
# Phrase tables. Patterns are regular expressions on lower-cased text with XXXX removed; each is
# wrapped in word boundaries when compiled. Alternatives are tried in order at each position,
# so longer phrases come first.
# ---------------------------------------------------------------------------------------------

# Words allowed between a subject ("heart size") and its predicate ("enlarged").
_GAP = (
    r"(?:\s+(?:is|are|was|were|appears?|remains?|seems?|has|have|had|become|becomes|been|be|"
    r"not|no|longer|now|again|still|also|may|might|could|possibly|probably|likely|borderline|"
    r"stable|stably|mildly|moderately|markedly|severely|slightly|minimally|significantly|"
    r"somewhat|grossly|overall|at|least|in|size|top|upper|very|quite|[a-z]+ly)){0,6}\s+"
)
_HEART = (
    r"(?:heart|heart size|cardiac size|cardiac silhouette(?: size)?|cardiac shadow|"
    r"cardiac contours?|cardiac diameter|heart shadow|size of the heart)"
)
_MEDIASTINUM = (
    r"(?:superior mediastinum|mediastinum|mediastinal (?:contours?|silhouettes?|shadow|width)|"
    r"cardio ?mediastinal (?:silhouettes?|contours?|shadow))"
)
# Subjects of "... is normal" statements about the heart / the mediastinum.
_HEART_SUBJECT = (
    r"(?:heart|heart size|cardiac size|cardiac silhouette(?: size)?|cardiac shadow|"
    r"cardiac contours?|size of the heart|cardio ?mediastinal (?:silhouettes?|contours?|shadow)|"
    r"cardiac and mediastinal (?:contours?|silhouettes?))"
)
_MEDIASTINUM_SUBJECT = (
    r"(?:mediastinum|mediastinal (?:contours?|silhouettes?|structures|shadow|width)|"
    r"cardio ?mediastinal (?:silhouettes?|contours?|shadow)|"
    r"cardiac and mediastinal (?:contours?|silhouettes?)|mediastinal and hilar contours?|"
    r"hilar and mediastinal contours?)"
)
# "... is normal" without words that would contradict it in between.
_NORMAL_TAIL = (
    r"(?:(?!\b(?:enlarg\w*|large|cardiomegaly|borderline|upper|high|top|prominent|widen\w*|"
    r"lungs?|but|however|although|except)\b)[^.;:]){0,60}?"
    r"\b(?:normal|within normal limits|unremarkable|not enlarged|not widened)"
)
_LUNGS = r"(?:lungs?|lung fields?|both lungs|lung parenchyma)"
_CLEAR_GAP = (
    r"(?:\s+(?:are|is|appear|appears|remain|remains|otherwise|now|grossly|again|also|both|"
    r"bilaterally|well expanded and|expanded and|normally inflated and|well aerated and|"
    r"hyperexpanded but|hyperinflated but|low in volume but)){0,4}\s+"
)

MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"(?:widen(?:ed|ing)|enlarge(?:d|ment)|prominen(?:t|ce)) of (?:the )?"
        r"(?:superior )?mediastinum",
        r"(?:widened|enlarged|prominent|wide) (?:superior )?mediastinum",
        r"(?:widened|enlarged|prominent) (?:cardio ?mediastinal|mediastinal) "
        r"(?:silhouettes?|contours?|shadow)",
        r"mediastinal (?:widening|enlargement|prominence|masse?s?)",
        r"cardio ?mediastinal (?:enlargement|widening)",
        _MEDIASTINUM + _GAP + r"(?:widened|enlarged|prominent|wide)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"(?:heart|cardiac) enlargement",
        r"enlargement of (?:the )?(?:heart|cardiac silhouette|cardiac shadow)",
        r"(?:enlarged|large|prominent) "
        r"(?:heart(?: size)?|cardiac (?:silhouette|shadow|contours?|size))",
        r"increased (?:heart size|cardiac size|size of the heart)",
        r"increase in (?:the )?"
        r"(?:heart size|cardiac size|size of the (?:heart|cardiac silhouette))",
        _HEART + _GAP + r"(?:enlarged|large|increased in size|increased)",
    ),
    "Lung Lesion": (
        r"calcifi(?:ed|c) "
        r"(?:nodules?|densit(?:y|ies)|opacit(?:y|ies)|granulom(?:as?|ata)|foci|focus)",
        r"nodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?|focus|foci)",
        r"nodules?",
        r"granulom(?:as?|ata)",
        r"mass(?:es)?",
        r"lesions?",
        r"tumou?rs?",
        r"neoplasms?",
        r"malignan(?:cy|cies)",
        r"carcinoma",
        r"metastas[ie]s",
        r"metastatic (?:disease|lesions?|nodules?)",
        r"cavitary (?:lesions?|masse?s?|nodules?)",
        r"cavitation",
        r"cavity",
        r"(?:lung|pulmonary) cancer",
    ),
    "Lung Opacity": (
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"infiltrat(?:es?|ions?|ive)",
        r"densit(?:y|ies)",
        r"haziness",
        r"hazy",
        r"air[ -]?space (?:disease|opacit(?:y|ies)|process|filling|shadowing)",
        r"ground[ -]glass",
        r"scar(?:s|ring|red)?",
        r"fibrosis",
        r"fibrotic",
        r"reticular",
        r"reticulonodular",
        r"interstitial (?:markings?|opacit(?:y|ies)|prominence|changes?|pattern|thickening|"
        r"lung disease|disease|infiltrates?)",
        r"(?:increased|prominent|coarse|coarsened) interstitial",
    ),
    "Edema": (
        r"(?:pulmonary |interstitial |alveolar |perihilar |vascular )?oedema",
        r"(?:pulmonary |interstitial |alveolar |perihilar |vascular )?edema",
        r"(?:pulmonary |vascular |venous |central |central vascular |central pulmonary |"
        r"pulmonary vascular |pulmonary venous )?congestion",
        r"congestive (?:heart failure|cardiac failure|failure|changes?)",
        r"chf",
        r"(?:heart|cardiac) failure",
        r"fluid overload",
        r"kerley (?:b )?lines",
        r"cephalization",
        r"(?:vascular|venous) (?:engorgement|redistribution)",
        r"(?:pulmonary|vascular)(?: [a-z]+)? (?:are|is|appears?) (?:\w+ly )?engorged",
        r"(?:central )?(?:pulmonary )?vascular prominence",
        r"prominen(?:t|ce of the) (?:central )?(?:pulmonary )?(?:vasculature|vascularity)",
        r"(?:pulmonary )?(?:vasculature|vascularity)" + _GAP + r"prominent",
    ),
    "Consolidation": (
        r"consolidat(?:ions?|ive|ed)",
    ),
    "Pneumonia": (
        r"bronchopneumonia",
        r"pneumonias?",
        r"pneumonitis",
        r"infectio(?:ns?|us)",
        r"infective",
    ),
    "Atelectasis": (
        r"atelecta(?:sis|ses|tic)",
        r"collapsed?",
        r"volume loss",
        r"loss of (?:lung )?volume",
    ),
    "Pneumothorax": (
        r"(?:hydro|hemo|haemo)?pneumothora(?:x|ces|xes)",
        r"pleural air(?: collections?)?",
    ),
    "Pleural Effusion": (
        r"(?:hydro|hemo|haemo)pneumothora(?:x|ces|xes)",
        r"effusions?",
        r"pleural fluid",
        r"fluid in the (?:\w+ )?(?:fissures?|pleural spaces?)",
        r"hydrothorax",
        r"hemothorax",
        # The angle's name is often the word XXXX removed: "blunting of the costophrenic".
        r"blunt(?:ing|ed) (?:of )?(?:the )?(?:[a-z]+ ){0,3}?"
        r"(?:costophrenic|cp|costodiaphragmatic)(?: (?:angles?|sulcus|sulci|recess(?:es)?))?",
        r"(?:costophrenic|cp|costodiaphragmatic)(?: (?:angles?|sulcus|sulci|recess(?:es)?))?"
        r"(?: [a-z]+){0,3}? (?:blunting|blunted)",
    ),
    "Pleural Other": (
        r"pleural[ -]parenchymal (?:scarring|thickening|scars?)",
        r"pleural (?:thickening|scarring|scars?|plaques?|calcifications?|fibrosis)",
        r"thickening of the pleura",
        r"fibrothorax",
        r"(?:apical )?pleural cap(?:s|ping)?",
    ),
    "Fracture": (
        r"fractur(?:es?|ed)",
        r"fx",
    ),
    "Support Devices": (
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|enteric|et|ng|og|"
        r"dobhoff|gastrostomy|thoracostomy|drainage) tubes?",
        r"tubes?",
        r"(?:central|venous|central venous|picc|arterial|port|dialysis|internal jugular|"
        r"subclavian|ij|swan[ -]ganz) (?:lines?|catheters?)",
        r"picc",
        r"lines and tubes",
        r"catheters?",
        r"pacemakers?",
        r"pacers?",
        r"(?:pacer|pacemaker|pacing|defibrillator|icd|aicd|cardiac|epicardial|ecg|ekg|monitor|"
        r"monitoring|telemetry) (?:leads?|wires?|electrodes?|generators?|devices?)",
        r"defibrillators?",
        r"aicd",
        r"icd",
        r"loop recorder",
        r"(?:sternotomy|sternal|cerclage|surgical|epicardial) (?:wires?|sutures?)",
        r"sternotomy",
        r"wires",
        r"leads",
        r"electrodes",
        r"clips?",
        r"stents?",
        r"port[ -]?a[ -]?caths?",
        r"portacaths?",
        r"mediports?",
        r"ports?",
        r"(?:prosthetic|mechanical|artificial|bioprosthetic|replacement) (?:[a-z]+ )?valves?",
        r"valve (?:replacement|prosthesis)",
        r"prosthes[ie]s",
        r"prosthetic",
        r"hardware",
        r"(?:fixation|fusion|surgical|metallic|compression) (?:plates?|screws?|rods?)",
        r"screws",
        r"drains?",
        r"sutures?",
        r"suture material",
        r"staples",
        r"coils?",
        r"(?:ivc|vena cava) filter",
        r"implanted (?:[a-z]+ )?devices?",
        r"devices?",
        r"cabg markers",
        r"(?:vp |ventriculoperitoneal )?shunt(?: tubing)?",
        r"tubing",
        r"(?:neuro|spinal cord )?stimulators?",
        r"(?:septal )?occluders?(?: devices?)?",
        r"(?:internal )?fixation (?:devices?|hardware)",
        r"bone anchors?",
        r"(?:catheter |line |port )?tips? (?:is |are )?(?:[a-z]+ )?(?:in|at|projects?|projecting|"
        r"terminat\w*|overl\w*|visualized|approximat\w*|near)",
    ),
}

# Statements that an observation is absent, without a negation word.
NORMAL_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"normal (?:size (?:and (?:configuration|contour|shape) )?of the )?"
        r"(?:heart size,? (?:and )?)?"
        r"(?:mediastinum|(?:cardio ?)?mediastinal (?:silhouettes?|contours?|width))",
        r"(?:heart and mediastinum|heart size and mediastinal contours?)" + _NORMAL_TAIL,
        _MEDIASTINUM_SUBJECT + _NORMAL_TAIL,
    ),
    "Cardiomegaly": (
        # "Upper limits of normal" is still normal (Open-i indexes it as normal 54 of 60 times).
        _HEART_SUBJECT + r"(?:\s+[a-z]+){0,4}?\s+(?:at |near |on |towards? )?(?:the )?"
        r"(?:upper limits?|upper range|upper end|high|top|upper)(?: (?:of|limits of))?"
        r"(?: the)? normal",
        r"(?:upper limits? of normal|upper normal|high normal|top normal) (?:heart|cardiac) "
        r"(?:size|silhouette)",
        r"normal[ -]?(?:sized?|size and (?:configuration|contour|shape) of the|size of the)?"
        r" (?:heart|cardiac silhouette|cardiac size|cardiac contours?|"
        r"cardio ?mediastinal (?:silhouettes?|contours?))",
        r"normal heart size",
        r"normal (?:heart and mediastinum|cardiac and mediastinal (?:contours?|silhouettes?))",
        r"(?:heart and mediastinum|heart size and mediastinal contours?)" + _NORMAL_TAIL,
        _HEART_SUBJECT + _NORMAL_TAIL,
    ),
    "Lung Opacity": (
        _LUNGS + _CLEAR_GAP + r"clear",
        r"clear lungs?",
        r"lungs? (?:are |is )?(?:clear|well expanded) and clear",
    ),
    "Consolidation": (_LUNGS + _CLEAR_GAP + r"clear", r"clear lungs?"),
    "Pneumonia": (_LUNGS + _CLEAR_GAP + r"clear", r"clear lungs?"),
    "Edema": (_LUNGS + _CLEAR_GAP + r"clear", r"clear lungs?"),
    "Pleural Effusion": (
        r"(?:sharp|clear) (?:costophrenic|cp) (?:angles?|sulci)",
        r"(?:costophrenic|cp) (?:angles?|sulci) (?:are |is |remain |appear )?"
        r"(?:sharp|clear|preserved)",
        r"pleural spaces? (?:are |is |appear |remain )?clear",
        r"clear pleural spaces?",
    ),
    "Pneumothorax": (
        r"pleural spaces? (?:are |is |appear |remain )?clear",
        r"clear pleural spaces?",
    ),
}

# Phrases that are hedged by themselves.
UNCERTAIN_PHRASES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        # An enlarged cardiomediastinal silhouette is most often the heart, but not surely.
        r"(?:enlarged|enlargement of the) cardio ?mediastinal (?:silhouettes?|contours?|shadow)",
        r"cardio ?mediastinal (?:silhouettes?|contours?|shadow)" + _GAP + r"(?:enlarged|large)",
        r"borderline (?:enlarged |large )?" + _HEART_SUBJECT,
        _HEART_SUBJECT + r"(?:\s+[a-z]+){0,3}?\s+borderline",
    ),
    "Enlarged Cardiomediastinum": (
        r"borderline (?:widened |enlarged )?(?:mediastinum|mediastinal (?:contours?|width))",
    ),
}

# Text that looks like a mention but is not one (masked before the mention search).
EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": (r"(?:pericardial|joint|knee|subdeltoid) effusions?",),
    "Edema": (r"(?:soft tissue|laryngeal|subcutaneous|extremity|ankle|leg) edema",),
    "Lung Opacity": (
        r"(?:bone|bony|osseous|breast|nipple|soft[ -]tissue|low|calcifi(?:ed|c)|metallic|"
        r"radiopaque|tubular|sclerotic) (?:densit(?:y|ies)|opacit(?:y|ies))",
        r"pleural(?:[ -]parenchymal)? (?:scar(?:s|ring)?|thickening|fibrosis)",
    ),
    "Lung Lesion": (
        r"mass effect",
        r"(?:breast|soft[ -]tissue|chest wall|mediastinal|neck|abdominal|axillary|thyroid|"
        r"paratracheal) mass(?:es)?",
        r"(?:breast|thyroid|prostate|colon|renal|skin) (?:carcinoma|cancer|malignancy)",
        r"metastatic disease to the bones?",
        r"reticul\w*[ -]nodular (?:opacit(?:y|ies)|densit(?:y|ies))",
        r"(?:bone|bony|osseous|lytic|blastic|sclerotic|skin|cutaneous|osteolytic|osteoblastic|"
        r"rib|expansile) lesions?",
    ),
    "Atelectasis": (
        r"(?:vertebral|vertebra|vertebral body|compression) collapse",
        r"collapse of (?:the )?(?:[tl]\d+|vertebral body|vertebra)",
        r"collapsed? vertebr\w+",
    ),
    # Healed granulomatous disease is not a current pneumonia.
    "Pneumonia": (
        r"(?:granulomatous|histoplasm\w*|fungal|tuberculo\w*|mycobacterial) "
        r"(?:infections?|process)",
        r"(?:prior|previous|old|remote|healed|sequelae? of|residuals? of) (?:\w+ )?infections?",
    ),
    "Fracture": (
        r"(?:catheter|line|wire|lead|port) fractures?",
        r"fracture of (?:the )?(?:[a-z]+ )?(?:sternotomy|sternal|catheter|wire|lead)",
        r"fractured (?:sternotomy |sternal )?(?:wires?|catheter|leads?)",
    ),
    "Support Devices": (
        r"(?:breast|nipple) (?:prosthes[ie]s|implants?|rings?)",
        r"prosthes[ie]s (?:of|in) the breasts?",
        r"nipple markers?",
        r"scapular tips?",
        r"(?:eustachian|endobronchial) tubes?",
        r"(?:fallopian) tubes?",
    ),
}

# Negation-looking phrases that do not negate ("no change in the effusion" keeps the effusion).
PSEUDO_CUES: tuple[str, ...] = (
    r"(?:no|without) (?:(?:significant|substantial|appreciable|definite|major|marked|"
    r"interval|apparent|real)\s+)*(?:change|changes|progression|increase|worsening)",
    r"not (?:significantly |substantially |markedly )?(?:changed|increased|progressed)",
    r"not only",
    r"no longer than",
)

# (pattern, inferential). Inferential cues ("to suggest") do not override a prior negation.
UNCERTAINTY_CUES: tuple[tuple[str, bool], ...] = (
    (r"(?:cannot|can ?not|can't|could not|not) (?:be )?(?:entirely |completely |totally |"
     r"definitely |fully |well )?(?:excluded|ruled out|exclude|rule out)", False),
    (r"(?:difficult|hard) to (?:exclude|rule out)", False),
    (r"(?:to |which |may |might |could )?suggest(?:s|ed|ing|ive of|ion of)?", True),
    (r"(?:to )?indicate", True),
    (r"concern(?:ing)? (?:for|of)", True),
    (r"suspicious (?:for|of)", True),
    (r"worrisome (?:for|of)", True),
    (r"suspicion (?:for|of)", False),
    (r"suspect(?:ed|s)?", False),
    (r"may|might|could", False),
    (r"possibl[ey]|possibility(?: of)?", False),
    (r"probabl[ey]", False),
    (r"(?:un)?likely", False),
    (r"question(?:able|ably|ed)?(?: of)?", False),
    (r"versus|vs", False),
    (r"borderline", False),
    (r"equivocal|indeterminate|uncertain", False),
    (r"presum(?:ed|ably|ptive)", False),
    (r"perhaps", False),
    (r"potential(?:ly)?", False),
    (r"favou?r(?:ed|s|ing)?", False),
    (r"differential(?: diagnosis| considerations?)?(?: includes?)?", False),
    (r"consider(?:ed|ation)?", False),
    (r"correlat\w*(?: clinically)? (?:for|with)", False),
)

# Hypothetical contexts: a mention here is not a finding ("if there is concern for fracture,
# consider a rib series", "bone scan to evaluate for metastatic disease").
HYPOTHETICAL_CUES: tuple[str, ...] = (
    r"if",
    r"in case of",
    r"(?:to |for )?(?:exclude|rule out|r/o)",
    r"(?:to |for )?(?:evaluate|evaluation|assess|assessment) (?:for|of)",
)

NEGATION_CUES: tuple[str, ...] = (
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"lack of",
    r"resolution of",
    r"removal of",
    r"rather than",
    r"without",
    r"no",
    r"not",
    r"none",
    r"neither",
    r"nor",
    r"never",
    r"absent",
    r"resolved",
    r"removed",
)

# Hedges and negations that follow the mention ("pneumonia cannot be excluded").
POST_UNCERTAINTY: tuple[str, ...] = (
    r"(?:cannot|can ?not|can't|could not|not|may not) (?:be )?(?:entirely |completely |totally |"
    r"definitely |fully )?(?:excluded|ruled out)",
    r"(?:is|are|was|were)(?: also)? (?:possible|possibly present|suspected|questioned|"
    r"questionable|likely|probable|favou?red|considered|a consideration|uncertain|equivocal)",
    r"(?:may|might|could) (?:also )?(?:be )?(?:present|seen|noted|there)",
    r"(?:is|are) (?:also )?(?:in|on) the differential",
    r"(?:is|are) (?:also )?(?:another |a )?(?:consideration|possibility|differential)",
    r"versus|vs",
)
POST_NEGATION: tuple[str, ...] = (
    r"(?:is|are|was|were|has been|have been)?\s*(?:not|no longer) (?:\w+ly |well[ -])?"
    r"(?:seen|identified|present|visualized|visible|appreciated|evident|demonstrated|noted|"
    r"detected|apparent|observed)",
    r"(?:is|are|was|were|has|have|has been|have been)?\s*(?:absent|resolved|cleared|removed|"
    r"ruled out)",
    # "pulmonary vascular engorgement appears within limits of normal"
    r"(?:is|are|appears?|remains?) (?:within (?:the )?(?:normal )?limits(?: of normal)?|normal)",
    # "fractures may not be demonstrated": a disclaimer, not a finding.
    r"(?:may|might|could|can|will|would) not (?:be )?(?:seen|demonstrated|visible|visualized|"
    r"detected|identified)",
)

# Clause boundaries: the split happens before the boundary word, which opens the next clause.
CLAUSE_BOUNDARY = (
    r";|:|\s+(?=(?:but(?! (?:otherwise )?clear\b)|however|although|though|whereas|while|"
    r"except|which|where|whose|"
    r"apart from|aside from|other than|besides|with the exception of)\b)"
    r"|,\s*(?=with\b)|,?\s+(?=and (?:the|there)\b)"
    r"|(?<!\bif)\s+(?=there (?:is|are|was|were|has been|have been)\b)"
)
# A finite verb then a comma or "and" closes a negation's scope ("no X is seen, Y is stable").
_SCOPE_BREAK = re.compile(
    r"\b(?:is|are|was|were|seen|identified|noted|present|demonstrated|visualized|appreciated|"
    r"evident)\b[^,]*?(?:,|\band\b)"
)

# ---------------------------------------------------------------------------------------------
# Compiled tables
# ---------------------------------------------------------------------------------------------


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive alternation with word boundaries around every phrase."""
    return re.compile("|".join(rf"\b(?:{p})\b" for p in patterns), re.IGNORECASE)


_MENTION_RE = {obs: _compile(p) for obs, p in MENTIONS.items()}
_NORMAL_RE = {obs: _compile(p) for obs, p in NORMAL_PHRASES.items()}
_UNCERTAIN_RE = {obs: _compile(p) for obs, p in UNCERTAIN_PHRASES.items()}
_EXCLUSION_RE = {obs: _compile(p) for obs, p in EXCLUSIONS.items()}
_PSEUDO_RE = _compile(PSEUDO_CUES)
_UNCERTAINTY_RES = [(_compile([p]), inferential) for p, inferential in UNCERTAINTY_CUES]
_NEGATION_RE = _compile(NEGATION_CUES)
_HYPOTHETICAL_RE = _compile(HYPOTHETICAL_CUES)
_POST_UNCERTAINTY_RE = re.compile(r"^[^,]{0,50}?\b(?:" + "|".join(POST_UNCERTAINTY) + r")\b")
_POST_NEGATION_RE = re.compile(r"^[^,]{0,50}?(?:\b|\s)(?:" + "|".join(POST_NEGATION) + r")\b")
_CLAUSE_RE = re.compile(CLAUSE_BOUNDARY)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_PORT_A_CATH_RE = re.compile(r"\bx{2,}-a-x{2,}\b", re.IGNORECASE)
_ABBREVIATIONS = (
    (re.compile(r"\bvs\.", re.I), "versus"),
    (re.compile(r"\b(?:e\.g|i\.e)\.", re.I), ""),
)

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


class Cue(NamedTuple):
    start: int
    end: int
    kind: Status  # NEGATIVE, UNCERTAIN, or NOT_MENTIONED for a hypothetical context
    inferential: bool = False


class Mention(NamedTuple):
    """One mention of an observation, with the status its clause gives it."""

    observation: str
    status: Status
    text: str  # the matched phrase
    clause: str


def normalize(text: str) -> str:
    """Lower-case, drop XXXX de-identification tokens, expand abbreviations that hold a '.'."""
    # De-identification turned "Port-A-Cath" into "XXXX-A-XXXX"; keep it as a device word.
    text = _PORT_A_CATH_RE.sub("port-a-cath", text.lower())
    text = DEIDENTIFIED.sub(" ", text)
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    return re.sub(r"[ \t]+", " ", text)


def split_sentences(text: str) -> list[str]:
    """Sentences of normalised text; empty pieces and bare list numbers are dropped."""
    parts = (s.strip(" .,") for s in _SENTENCE_RE.split(text))
    return [s for s in parts if s and not re.fullmatch(r"\d+", s)]


def split_clauses(sentence: str) -> list[str]:
    """Clauses of one sentence; a cue's scope never crosses a clause boundary."""
    return [c.strip(" ,") for c in _CLAUSE_RE.split(sentence) if c.strip(" ,")]


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """Replace the spans by spaces, keeping every other character at its offset."""
    spans = list(spans)
    if not spans:
        return text
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def find_cues(clause: str) -> list[Cue]:
    """Negation and uncertainty cues of one clause, sorted by start."""
    masked = _mask(clause, (m.span() for m in _PSEUDO_RE.finditer(clause)))
    cues: list[Cue] = []
    for regex, inferential in _UNCERTAINTY_RES:
        new = [
            Cue(m.start(), m.end(), Status.UNCERTAIN, inferential) for m in regex.finditer(masked)
        ]
        # A hedge's words ("not" in "not excluded") must not count again as a negation.
        masked = _mask(masked, ((c.start, c.end) for c in new))
        cues.extend(new)
    for m in _HYPOTHETICAL_RE.finditer(masked):
        cues.append(Cue(m.start(), m.end(), Status.NOT_MENTIONED))
    masked = _mask(masked, ((c.start, c.end) for c in cues))
    for m in _NEGATION_RE.finditer(masked):
        cues.append(Cue(m.start(), m.end(), Status.NEGATIVE))
    return sorted(cues)


def _in_scope(clause: str, cue: Cue, mention_start: int) -> bool:
    """False when a negation is closed by a finite verb and ',' / 'and' before the mention.

    Hedges keep their scope: "differential diagnosis is broad and includes edema, infection".
    """
    if cue.kind is not Status.NEGATIVE:
        return True
    between = clause[cue.end:mention_start]
    return _SCOPE_BREAK.search(between) is None


def classify_mention(clause: str, start: int, end: int, cues: list[Cue]) -> Status:
    """Status of the mention clause[start:end] from the cues before it, else those after it."""
    before = [c for c in cues if c.end <= end and _in_scope(clause, c, start)]
    if before:
        if any(c.kind is Status.NOT_MENTIONED for c in before):
            return Status.NOT_MENTIONED  # "if there is concern for fracture, ..."
        nearest = before[-1]
        if nearest.kind is Status.UNCERTAIN and nearest.inferential:
            # "no focal opacity to suggest pneumonia": the negation governs the inference.
            if any(c.kind is Status.NEGATIVE for c in before[:-1]):
                return Status.NEGATIVE
        return nearest.kind
    after = clause[end:]
    if _POST_UNCERTAINTY_RE.search(after):
        return Status.UNCERTAIN
    if _POST_NEGATION_RE.search(after):
        return Status.NEGATIVE
    return Status.POSITIVE


def _spans(regex: re.Pattern[str] | None, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in regex.finditer(text)] if regex is not None else []


def clause_mentions(clause: str, cues: list[Cue] | None = None) -> list[Mention]:
    """All mentions of all observations in one clause."""
    if cues is None:
        cues = find_cues(clause)
    found: list[Mention] = []
    for obs in OBSERVATIONS:
        if obs == "No Finding":
            continue
        text = _mask(clause, _spans(_EXCLUSION_RE.get(obs), clause))
        # Hedged phrases: the cues still apply, but the best they reach is UNCERTAIN.
        spans = _spans(_UNCERTAIN_RE.get(obs), text)
        for s, e in spans:
            status = classify_mention(clause, s, e, cues)
            if status is not Status.NOT_MENTIONED:
                capped = min(status, Status.UNCERTAIN, key=_RANK.get)
                found.append(Mention(obs, capped, clause[s:e], clause))
        text = _mask(text, spans)
        spans = _spans(_NORMAL_RE.get(obs), text)
        found.extend(Mention(obs, Status.NEGATIVE, clause[s:e], clause) for s, e in spans)
        text = _mask(text, spans)
        for m in _MENTION_RE[obs].finditer(text):
            status = classify_mention(clause, m.start(), m.end(), cues)
            if status is not Status.NOT_MENTIONED:  # hypothetical mentions are dropped
                found.append(Mention(obs, status, m.group(0), clause))
    return found


def extract_mentions(text: str) -> list[Mention]:
    """Every mention in a report, in reading order of clauses."""
    mentions: list[Mention] = []
    for sentence in split_sentences(normalize(text)):
        for clause in split_clauses(sentence):
            mentions.extend(clause_mentions(clause))
    return mentions


def aggregate(mentions: Iterable[Mention]) -> dict[str, Status]:
    """Report-level labels: positive > uncertain > negative > not mentioned; then No Finding."""
    labels = {obs: Status.NOT_MENTIONED for obs in OBSERVATIONS}
    for m in mentions:
        if _RANK[m.status] > _RANK[labels[m.observation]]:
            labels[m.observation] = m.status
    found = any(
        labels[obs] in (Status.POSITIVE, Status.UNCERTAIN)
        for obs in OBSERVATIONS
        if obs not in _NOT_PATHOLOGY
    )
    labels["No Finding"] = Status.NEGATIVE if found else Status.POSITIVE
    return labels


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def label_report(text: str) -> dict[str, Status]:
    """The 14 CheXpert observation labels of one report (all keys always present)."""
    if not isinstance(text, str):
        raise TypeError(f"report must be str, got {type(text).__name__}: {text!r}")
    return aggregate(extract_mentions(text))


def label_reports(texts: Iterable[str]) -> list[dict[str, Status]]:
    """label_report over many reports."""
    return [label_report(t) for t in texts]


def to_binary(labels: dict[str, Status], uncertain_as: float = 1.0) -> list[float]:
    """14 floats in OBSERVATIONS order: positive 1, uncertain `uncertain_as`, otherwise 0."""
    missing = [obs for obs in OBSERVATIONS if obs not in labels]
    if missing:
        raise ValueError(f"labels lack observations {missing}")
    values = {Status.POSITIVE: 1.0, Status.UNCERTAIN: float(uncertain_as)}
    return [values.get(Status(labels[obs]), 0.0) for obs in OBSERVATIONS]


def positive_findings(labels: dict[str, Status], include_uncertain: bool = True) -> list[str]:
    """Observation names found in the report (OBSERVATIONS order), excluding "No Finding"."""
    keep = {Status.POSITIVE, Status.UNCERTAIN} if include_uncertain else {Status.POSITIVE}
    return [
        obs
        for obs in OBSERVATIONS
        if obs != "No Finding" and Status(labels.get(obs, Status.NOT_MENTIONED)) in keep
    ]


def main(argv: list[str] | None = None) -> int:
    """Label the reports given as arguments (or one per stdin line) and print JSON lines."""
    args = sys.argv[1:] if argv is None else argv
    texts = args or [line for line in sys.stdin.read().splitlines() if line.strip()]
    for text in texts:
        labels = label_report(text)
        found = {obs: s.value for obs, s in labels.items() if s is not Status.NOT_MENTIONED}
        print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
