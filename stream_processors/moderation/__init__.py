"""Input moderation, as plain logic: classifiers, PII detection, the abuse score, the policy.

Nothing here knows about Faust; ``stream_processors.agents.moderation`` wires it to the bus.
"""

from stream_processors.moderation.abuse import AbusePolicy, AbuseState, decayed
from stream_processors.moderation.categories import ABUSE, CATEGORIES, thresholds_from
from stream_processors.moderation.classifier import Classifier, HybridClassifier, build_classifier
from stream_processors.moderation.pii import find_pii, luhn_valid
from stream_processors.moderation.rules import RuleClassifier

__all__ = [
    "ABUSE",
    "CATEGORIES",
    "AbusePolicy",
    "AbuseState",
    "Classifier",
    "HybridClassifier",
    "RuleClassifier",
    "build_classifier",
    "decayed",
    "find_pii",
    "luhn_valid",
    "thresholds_from",
]
