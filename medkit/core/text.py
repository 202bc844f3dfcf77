"""Report-text conventions shared by the labelers and the report generator.

    python -c "from medkit.core.text import DEIDENTIFIED; print(DEIDENTIFIED.sub('_', 'Pulmonary XXXX are normal.'))"
"""

from __future__ import annotations

import re

#: De-identification placeholders: IU X-ray (Open-i) reports write "XXXX" for every removed word
#: ("pulmonary XXXX are normal"), sometimes glued to a word ("3rd-5XXXX"). The labelers drop them
#: before reading a report; the generator learns from such reports but never writes one (they are
#: left out of its decoding vocabulary). Three x's or more, any case: no English word holds them.
DEIDENTIFIED = re.compile(r"x{3,}", re.IGNORECASE)
