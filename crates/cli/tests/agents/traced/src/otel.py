"""The agent's own OpenTelemetry set-up: the SDK exporting over OTLP/HTTP to
where the OTEL_* variables say (the service is OTEL_SERVICE_NAME), in
batches from a thread of its own (FastAPI makes spans of its own too: a
synchronous exporter would hold every request while a collector is down)."""

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("traced-agent")
