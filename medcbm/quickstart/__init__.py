"""``make quickstart``: the whole journey on the shared data — train a CBM and a black box at two HAM10000
acquisition sites, adapt the CBM to the third from a few labelled images (and the rest unlabelled), compare it
with the base model on held-out patients of that site, write the site acceptance report, audit its predictions —
in one run directory.

Sits on top of the workflows, adaptation and audit layers; nothing imports it but the CLI.
"""

from medcbm.quickstart.journey import STAGES, run_quickstart
from medcbm.quickstart.results import QuickstartResult
from medcbm.quickstart.summary import render_summary

__all__ = ["STAGES", "QuickstartResult", "render_summary", "run_quickstart"]
