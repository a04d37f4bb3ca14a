// Package tracing exports each finished pipeline run as an OpenTelemetry
// trace over OTLP/gRPC: a root span for the run and one span per stage,
// with the stage's real start and end and the CI/CD semantic-convention
// attributes. It is optional and off unless configured.
package tracing

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

const (
	// DefaultQueueSize is how many finished runs may wait for export; past
	// it a run's spans are dropped and counted, so a collector that is down
	// never holds up the applier.
	DefaultQueueSize = 1000
	// exportTimeout bounds one run's export, retries included.
	exportTimeout = 30 * time.Second
	serviceName   = "pipeline_exporter"
)

// Options configure the exporter.
type Options struct {
	// Endpoint is the OTLP/gRPC collector, host:port or a URL; empty leaves
	// it to the standard OTEL_EXPORTER_OTLP_ENDPOINT and
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables (default localhost:4317).
	Endpoint string
	// Insecure sends without TLS; the OTEL_EXPORTER_OTLP_INSECURE variable
	// does the same.
	Insecure bool
	// PageURL returns the address of a run's page, for the run span's
	// cicd.pipeline.run.url.full; nil leaves it out.
	PageURL func(id int64) string
	// QueueSize is the number of finished runs that may wait; zero means
	// DefaultQueueSize.
	QueueSize  int
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Enabled reports whether tracing is configured: by an endpoint in the
// config file or by the standard OTLP environment variables.
func Enabled(endpoint string) bool {
	return endpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Exporter turns finished runs into traces. Observe queues; one goroutine
// exports.
type Exporter struct {
	queue    chan *pipeline.Run
	exporter sdktrace.SpanExporter
	provider *sdktrace.TracerProvider
	spans    *collector
	tracer   trace.Tracer
	pageURL  func(int64) string
	logger   *slog.Logger
	done     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once

	exported prometheus.Counter
	dropped  *prometheus.CounterVec
}

// New returns an exporter sending to o's endpoint, with its goroutine
// started. The connection is made lazily: a collector that is not up yet
// is not an error.
func New(ctx context.Context, o Options) (*Exporter, error) {
	var opts []otlptracegrpc.Option
	switch {
	case strings.Contains(o.Endpoint, "://"):
		opts = append(opts, otlptracegrpc.WithEndpointURL(o.Endpoint))
	case o.Endpoint != "":
		opts = append(opts, otlptracegrpc.WithEndpoint(o.Endpoint))
	}
	if o.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	return newExporter(ctx, exp, o)
}

func newExporter(ctx context.Context, exp sdktrace.SpanExporter, o Options) (*Exporter, error) {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default
	// service name.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName)),
		resource.WithFromEnv(),
		resource.WithSchemaURL(semconv.SchemaURL),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	spans := &collector{}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(fixedIDs{}),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(spans),
	)
	e := &Exporter{
		queue:    make(chan *pipeline.Run, o.QueueSize),
		exporter: exp,
		provider: provider,
		spans:    spans,
		tracer:   provider.Tracer("github.com/pipeline-exporter/pipeline_exporter/tracing"),
		pageURL:  o.PageURL,
		logger:   o.Logger,
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pipeline_exporter_trace_spans_exported_total",
			Help: "Spans of finished runs sent to the OTLP collector.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_exporter_trace_spans_dropped_total",
			Help: "Spans of finished runs not sent, because the export queue was full or the collector did not take them.",
		}, []string{"reason"}),
	}
	e.dropped.WithLabelValues("queue_full")
	e.dropped.WithLabelValues("export_failed")
	if o.Registerer != nil {
		o.Registerer.MustRegister(e.exported, e.dropped)
	}
	go e.run()
	return e, nil
}

// Observe queues u's run for export when the update finished it. It never
// blocks: with the queue full the run's spans are dropped and counted.
// Register it as an observer of the applier.
func (e *Exporter) Observe(u pipeline.Update) {
	if !u.Finished || u.Run == nil {
		return
	}
	// u.Run is the Tracker's copy for this update; nothing changes it
	// after the commit, so the export goroutine may read it as it is.
	select {
	case e.queue <- u.Run:
	default:
		e.dropped.WithLabelValues("queue_full").Add(float64(spanCount(u.Run)))
	}
}

// Shutdown stops the exporter: runs still queued are exported while ctx
// allows, then the connection is closed.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.stopOnce.Do(func() { close(e.done) })
	select {
	case <-e.stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		select {
		case r := <-e.queue:
			e.export(ctx, r)
			continue
		default:
		}
		break
	}
	return errors.Join(e.exporter.Shutdown(ctx), e.provider.Shutdown(ctx))
}

func (e *Exporter) run() {
	defer close(e.stopped)
	for {
		select {
		case <-e.done:
			return
		case r := <-e.queue:
			ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
			e.export(ctx, r)
			cancel()
		}
	}
}

// export sends one run's spans. Only the export goroutine (or Shutdown,
// after it stopped) calls it, so the collected spans need no lock.
func (e *Exporter) export(ctx context.Context, r *pipeline.Run) {
	e.record(r)
	spans := e.spans.take()
	if err := e.exporter.ExportSpans(ctx, spans); err != nil {
		e.dropped.WithLabelValues("export_failed").Add(float64(len(spans)))
		e.logger.Warn("Exporting a run's trace failed", "run", r.ID, "spans", len(spans), "err", err)
		return
	}
	e.exported.Add(float64(len(spans)))
}

// record builds the run's spans through the SDK with their real times and
// deterministic ids; the collector keeps them for export.
func (e *Exporter) record(r *pipeline.Run) {
	ids := runIDs(r)
	end := r.CreatedAt
	if r.FinishedAt != nil {
		end = *r.FinishedAt
	}
	attrs := []attribute.KeyValue{
		semconv.CICDPipelineName(r.Pipeline),
		semconv.CICDPipelineRunID(strconv.FormatInt(r.ID, 10)),
		semconv.CICDPipelineResultKey.String(result(r.Status)),
	}
	attrs = appendSet(attrs,
		attribute.String("pipeline.trigger.source", string(r.Trigger.Source)),
		attribute.String("pipeline.trigger.event", r.Trigger.Event))
	if e.pageURL != nil {
		attrs = append(attrs, semconv.CICDPipelineRunURLFull(e.pageURL(r.ID)))
	}
	if g := r.GitHub; g != nil {
		attrs = appendSet(attrs,
			semconv.VCSRepositoryName(g.Repository),
			semconv.VCSRefHeadName(g.HeadBranch),
			semconv.VCSRefHeadRevision(g.HeadSHA))
		attrs = append(attrs,
			attribute.Int64("github.run.id", g.RunID),
			attribute.Int("github.run.attempt", max(g.RunAttempt, 1)))
	}
	ctx := withIDs(context.Background(), ids.trace, ids.root)
	ctx, root := e.tracer.Start(ctx, r.Pipeline,
		trace.WithTimestamp(r.CreatedAt), trace.WithAttributes(attrs...), trace.WithSpanKind(trace.SpanKindInternal))
	setStatus(root, r.Status, r.Error)
	for i, s := range r.Stages {
		if s.StartedAt == nil {
			continue
		}
		stop := end
		if s.FinishedAt != nil {
			stop = *s.FinishedAt
		}
		sattrs := []attribute.KeyValue{
			semconv.CICDPipelineName(r.Pipeline),
			semconv.CICDPipelineRunID(strconv.FormatInt(r.ID, 10)),
			semconv.CICDPipelineTaskName(s.Name),
			semconv.CICDPipelineTaskRunResultKey.String(result(s.Status)),
		}
		if s.JobID != 0 {
			sattrs = append(sattrs, semconv.CICDPipelineTaskRunID(strconv.FormatInt(s.JobID, 10)))
		}
		if s.URL != "" {
			sattrs = append(sattrs, semconv.CICDPipelineTaskRunURLFull(s.URL))
		}
		if t := taskType(s.Name); t != "" {
			sattrs = append(sattrs, semconv.CICDPipelineTaskTypeKey.String(t))
		}
		_, span := e.tracer.Start(withIDs(ctx, ids.trace, stageSpanID(r, i, s.Name)), s.Name,
			trace.WithTimestamp(*s.StartedAt), trace.WithAttributes(sattrs...))
		setStatus(span, s.Status, s.Error)
		span.End(trace.WithTimestamp(stop))
	}
	root.End(trace.WithTimestamp(end))
}

// appendSet appends the string attributes that have a value: an empty
// one says nothing and clutters the trace view.
func appendSet(attrs []attribute.KeyValue, kvs ...attribute.KeyValue) []attribute.KeyValue {
	for _, kv := range kvs {
		if kv.Value.AsString() != "" {
			attrs = append(attrs, kv)
		}
	}
	return attrs
}

// spanCount is how many spans record makes of r.
func spanCount(r *pipeline.Run) int {
	n := 1
	for _, s := range r.Stages {
		if s.StartedAt != nil {
			n++
		}
	}
	return n
}

func setStatus(s trace.Span, st pipeline.Status, msg string) {
	switch st {
	case pipeline.StatusFailed, pipeline.StatusTimedOut:
		if msg == "" {
			msg = string(st)
		}
		s.SetStatus(codes.Error, msg)
	case pipeline.StatusSuccess:
		s.SetStatus(codes.Ok, "")
	}
}

// result maps a status to the semantic conventions' result values.
func result(s pipeline.Status) string {
	switch s {
	case pipeline.StatusSuccess:
		return semconv.CICDPipelineResultSuccess.Value.AsString()
	case pipeline.StatusFailed:
		return semconv.CICDPipelineResultFailure.Value.AsString()
	case pipeline.StatusCancelled:
		return semconv.CICDPipelineResultCancellation.Value.AsString()
	case pipeline.StatusTimedOut:
		return semconv.CICDPipelineResultTimeout.Value.AsString()
	case pipeline.StatusSkipped:
		return semconv.CICDPipelineResultSkip.Value.AsString()
	}
	return string(s)
}

// taskType names the kind of work a stage is, where the conventions have
// a word for it.
func taskType(stage string) string {
	switch stage {
	case pipeline.StagePages:
		return semconv.CICDPipelineTaskTypeDeploy.Value.AsString()
	case pipeline.StageVerify:
		return semconv.CICDPipelineTaskTypeTest.Value.AsString()
	}
	return ""
}

// ids are a run's trace id and root span id.
type ids struct {
	trace trace.TraceID
	root  trace.SpanID
}

// runIDs derives the run's ids. A run that follows a GitHub workflow run
// shares its trace id with what OpenTelemetry's GitHub receiver makes of
// that run (the first 16 bytes of SHA-256 of run id, attempt and "t"), so
// both land in one trace; other runs hash the exporter's run id.
func runIDs(r *pipeline.Run) ids {
	var out ids
	if g := r.GitHub; g != nil && g.RunID != 0 {
		attempt := max(g.RunAttempt, 1)
		sum := sha256.Sum256(fmt.Appendf(nil, "%d%dt", g.RunID, attempt))
		copy(out.trace[:], sum[:16])
	} else {
		sum := sha256.Sum256(fmt.Appendf(nil, "pipeline_exporter run %d", r.ID))
		copy(out.trace[:], sum[:16])
	}
	// The root span is the exporter's pipeline run, not the receiver's
	// workflow-run span, so its id is the exporter's own.
	sum := sha256.Sum256(fmt.Appendf(nil, "pipeline_exporter run %d span", r.ID))
	copy(out.root[:], sum[:8])
	return out
}

// stageSpanID derives a stage span's id from its place too: two jobs may
// share a name.
func stageSpanID(r *pipeline.Run, i int, stage string) trace.SpanID {
	var id trace.SpanID
	sum := sha256.Sum256(fmt.Appendf(nil, "pipeline_exporter run %d stage %d %s", r.ID, i, stage))
	copy(id[:], sum[:8])
	return id
}

type idsKey struct{}

func withIDs(ctx context.Context, t trace.TraceID, s trace.SpanID) context.Context {
	return context.WithValue(ctx, idsKey{}, ids{trace: t, root: s})
}

// fixedIDs hands the SDK the ids record chose, carried in the context, so
// that exporting a run twice (after a restart) gives the same trace.
type fixedIDs struct{}

func (fixedIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	v, _ := ctx.Value(idsKey{}).(ids)
	return v.trace, v.root
}

func (fixedIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	v, _ := ctx.Value(idsKey{}).(ids)
	return v.root
}

// collector is a span processor that keeps ended spans for export.
type collector struct {
	spans []sdktrace.ReadOnlySpan
}

func (c *collector) take() []sdktrace.ReadOnlySpan {
	s := c.spans
	c.spans = nil
	return s
}

func (c *collector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *collector) OnEnd(s sdktrace.ReadOnlySpan)                   { c.spans = append(c.spans, s) }
func (c *collector) Shutdown(context.Context) error                  { return nil }
func (c *collector) ForceFlush(context.Context) error                { return nil }
