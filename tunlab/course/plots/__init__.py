"""Matplotlib figures for the lessons: packet paths (:mod:`.paths`), byte layouts
(:mod:`.layout`), charts of measurements (:mod:`.charts`), rendering and presenter mode
(:mod:`.render`)."""

from tunlab.course.plots.charts import bars, drop_reasons, latency, loss_curve, rates, throughput
from tunlab.course.plots.layout import (
           LAYER_COLORS,
           LAYER_NAMES,
           Field,
           byte_layout,
           frame_layout,
           layout_fields,
           read_layout,
)
from tunlab.course.plots.paths import (
           SEED_STEPS,
           Step,
           drop_stage,
           fate_path,
           packet_path,
           seed_path,
           seed_steps,
)
from tunlab.course.plots.render import (
           COLORS,
           CSS_DPI,
           HIDPI,
           PRESENTER_MIN_POINTS,
           PRESENTER_SCALE,
           SMALLEST_TEXT_KEY,
           Rendered,
           figure_text,
           png_size,
           presenter_on,
           render,
           set_presenter,
           smallest_text_points,
           to_png,
)

__all__ = ['COLORS', 'CSS_DPI', 'Field', 'HIDPI', 'LAYER_COLORS', 'LAYER_NAMES',
           'PRESENTER_MIN_POINTS', 'PRESENTER_SCALE', 'Rendered', 'SEED_STEPS',
           'SMALLEST_TEXT_KEY', 'Step', 'bars', 'byte_layout', 'drop_reasons', 'drop_stage',
           'fate_path', 'figure_text', 'frame_layout', 'latency', 'layout_fields', 'loss_curve',
           'packet_path', 'png_size', 'presenter_on', 'rates', 'read_layout', 'render',
           'seed_path', 'seed_steps', 'set_presenter', 'smallest_text_points', 'throughput',
           'to_png']
