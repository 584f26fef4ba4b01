"""Loaders for real public data sets into ``Signals`` (paths are always given by the caller)."""

from gridrl.data.loaders.alibaba import (
    QOS_CLASSES,
    PodTrace,
    alibaba_workload,
    load_alibaba_pods,
    trace_cluster_gpus,
)
from gridrl.data.loaders.citylearn import CITYLEARN_FORECAST_HORIZONS_H, load_citylearn
from gridrl.data.loaders.demand import (
    LLM_TRACE_COLUMNS,
    load_llm_requests,
    load_utilisation_trace,
)
from gridrl.data.loaders.eia930 import EIA930_NAMES, load_eia930
from gridrl.data.loaders.entsoe import (
    ENTSOE_PRODUCTION_NAMES,
    entsoe_production_columns,
    load_entsoe_carbon,
    load_entsoe_production,
)
from gridrl.data.loaders.multiregion import (
    ZONE_TIMEZONES,
    load_multiregion_carbon,
    load_multiregion_price,
    load_multiregion_weather,
)

__all__ = [
    "CITYLEARN_FORECAST_HORIZONS_H",
    "EIA930_NAMES",
    "ENTSOE_PRODUCTION_NAMES",
    "LLM_TRACE_COLUMNS",
    "QOS_CLASSES",
    "PodTrace",
    "alibaba_workload",
    "entsoe_production_columns",
    "load_alibaba_pods",
    "load_citylearn",
    "load_eia930",
    "load_llm_requests",
    "load_utilisation_trace",
    "trace_cluster_gpus",
    "ZONE_TIMEZONES",
    "load_multiregion_carbon",
    "load_multiregion_price",
    "load_multiregion_weather",
    "load_entsoe_carbon",
    "load_entsoe_production",
]
