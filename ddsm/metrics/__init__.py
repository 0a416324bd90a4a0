"""Sample quality: FID in a feature space learnt on the data, and a cheap teacher-relative proxy.

The search only sees :class:`~ddsm.metrics.evaluator.Evaluator`: a batch of
candidate schedules in, one row of metrics per candidate out.
"""

from ddsm.metrics.evaluator import Evaluator, FIDEvaluator, ProxyEvaluator, SamplingEvaluator
from ddsm.metrics.featurenet import FeatureNet, train_featurenet
from ddsm.metrics.fid import FID
from ddsm.metrics.linear_proxy import LinearProxyEvaluator
from ddsm.metrics.proxy import TeacherProxy

__all__ = ["Evaluator", "FID", "FIDEvaluator", "FeatureNet", "LinearProxyEvaluator", "ProxyEvaluator", "SamplingEvaluator", "TeacherProxy",
           "train_featurenet"]
