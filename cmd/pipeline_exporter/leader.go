package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// prunePeriod is how often the leader enforces retention in a shared
// store (SQLite prunes by itself).
const prunePeriod = time.Minute

// leadership runs the Applier and what only the Applier's holder runs
// (pollers, verify checks, pruning): always with SQLite; with PostgreSQL
// while this replica holds the leader lock, at most one replica at a time.
// It is the webhooks' Ingester and the pollers' and verify checks' sink.
type leadership struct {
	be        backend
	shared    shared // nil with SQLite
	safe      *config.SafeConfig
	observers []func(pipeline.Update)
	logger    *slog.Logger
	pollers   *pollers
	verifier  *verifier

	leader prometheus.Gauge
	lag    prometheus.Gauge

	mu sync.RWMutex
	// applier is the running Applier; nil while this replica does not lead.
	applier *pipeline.Applier
}

func newLeadership(be backend, safe *config.SafeConfig, reg prometheus.Registerer, observers []func(pipeline.Update), logger *slog.Logger) *leadership {
	l := &leadership{
		be:        be,
		safe:      safe,
		observers: observers,
		logger:    logger.With("component", "applier"),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_leader",
			Help: "1 when this instance applies the delivery log (the leader), 0 otherwise.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_log_lag_entries",
			Help: "Delivery log entries appended but not applied yet.",
		}),
	}
	if sh, ok := be.(shared); ok {
		l.shared = sh
	}
	reg.MustRegister(l.leader, l.lag)
	return l
}

// start runs the Applier at once with SQLite, or a campaign for the leader
// lock with PostgreSQL; both stop when ctx is done.
func (l *leadership) start(ctx context.Context, wg *sync.WaitGroup) error {
	if l.shared == nil {
		errc := make(chan error, 1)
		ready := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- l.term(ctx, nil, ready)
		}()
		// A store the Applier cannot restore from is a start-up error.
		select {
		case err := <-errc:
			return err
		case <-ready:
			return nil
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.campaign(ctx)
	}()
	go func() {
		defer wg.Done()
		l.watchLag(ctx)
	}()
	return nil
}

// campaign waits for the leader lock, leads until the lock is lost, and
// tries again, until ctx is done.
func (l *leadership) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		lost, err := l.shared.Lead(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.logger.Warn("Campaign for the leader lock failed; retrying", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		l.logger.Info("Leading: this instance applies the delivery log")
		termCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.term(termCtx, l.shared.Appended(), nil) }()
		select {
		case <-lost:
			cancel()
			<-done
			l.logger.Warn("Lost the leader lock: stopped applying")
		case err := <-done:
			cancel()
			// The term ended by itself (shutdown, or an Applier that could
			// not restore): the lock must not outlive it, or this replica
			// would lead without applying and no other could take over.
			l.shared.Resign()
			if err != nil && ctx.Err() == nil {
				l.logger.Error("The applier stopped; gave up the leader lock", "err", err)
				sleep(ctx, time.Second)
			}
		}
	}
}

// term is one stretch of leadership: the Applier, the pollers, the verify
// checks under way and (shared) pruning, all stopped together when ctx is
// done. ready, when not nil, is closed once the Applier has restored.
func (l *leadership) term(ctx context.Context, appended <-chan struct{}, ready chan<- struct{}) error {
	a := pipeline.NewApplier(l.be, l.safe.Get().Specs(), pipeline.ApplierOptions{
		Now:         time.Now,
		Observers:   l.observers,
		StartVerify: func(r *pipeline.Run) { l.verifier.start(ctx, r) },
		SharedLog:   l.shared != nil,
		Wake:        appended,
		Logger:      l.logger,
	})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	restored := make(chan struct{})
	go func() {
		// Hand out the Applier once it took its first submission, which
		// it does only after restoring.
		if err := a.SetSpecs(ctx, l.safe.Get().Specs()); err == nil {
			close(restored)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-restored:
	}
	l.set(a)
	l.leader.Set(1)
	l.pollers.apply(l.safe.Get())
	if ready != nil {
		close(ready)
	}
	defer func() {
		l.pollers.stop()
		l.set(nil)
		l.leader.Set(0)
	}()
	var prune <-chan time.Time
	if l.shared != nil {
		t := time.NewTicker(prunePeriod)
		defer t.Stop()
		prune = t.C
	}
	for {
		select {
		case err := <-done:
			return err
		case <-prune:
			if err := l.shared.Prune(ctx); err != nil && ctx.Err() == nil {
				l.logger.Error("Pruning the history failed", "err", err)
			}
		}
	}
}

func (l *leadership) set(a *pipeline.Applier) {
	l.mu.Lock()
	l.applier = a
	l.mu.Unlock()
}

func (l *leadership) current() *pipeline.Applier {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.applier
}

// isLeader reports whether this instance applies the log now.
func (l *leadership) isLeader() bool { return l.current() != nil }

// errNotLeading is what pollers and verify checks get between terms.
var errNotLeading = fmt.Errorf("%w: this instance does not lead", pipeline.ErrUnavailable)

// Ingest makes a webhook delivery durable. On the leader, SQLite's or
// PostgreSQL's, the Applier appends and applies it in one transaction,
// shared with the deliveries arriving meanwhile. Another replica appends it
// to the shared log and waits briefly for the leader's outcome: `queued`
// when it does not come in time, since the delivery is durable and will be
// applied. So does the leader when its Applier fails to commit (it may have
// just lost the lock): nothing was stored, and the shared log may still
// take the delivery.
func (l *leadership) Ingest(ctx context.Context, e *pipeline.Entry) (pipeline.Result, error) {
	if a := l.current(); a != nil {
		res, err := a.Ingest(ctx, e)
		if err == nil || l.shared == nil {
			return res, err
		}
	}
	if l.shared == nil {
		return pipeline.Result{}, errNotLeading
	}
	if err := l.shared.AppendShared(ctx, e); err != nil {
		return pipeline.Result{}, err
	}
	if e.Seq == 0 {
		return pipeline.Result{Outcome: pipeline.OutcomeDuplicate}, nil
	}
	res, ok, err := l.shared.WaitResult(ctx, e.Source, e.DeliveryID)
	if err != nil || !ok {
		// Durable already: a wait that fails is no reason for a retry.
		return pipeline.Result{Outcome: pipeline.OutcomeQueued}, nil
	}
	return res, nil
}

// Apply hands polled events and verify results to the Applier.
func (l *leadership) Apply(ctx context.Context, events []pipeline.Event) error {
	a := l.current()
	if a == nil {
		return errNotLeading
	}
	return a.Apply(ctx, events)
}

// reload gives the Applier and the pollers the reloaded configuration.
func (l *leadership) reload(ctx context.Context) {
	cfg := l.safe.Get()
	if a := l.current(); a != nil {
		if err := a.SetSpecs(ctx, cfg.Specs()); err != nil {
			l.logger.Error("Applying the reloaded pipelines", "err", err)
		}
		l.pollers.apply(cfg)
	}
}

// watchLag keeps pipeline_exporter_log_lag_entries current.
func (l *leadership) watchLag(ctx context.Context) {
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := l.shared.Lag(qctx)
		cancel()
		if err == nil {
			l.lag.Set(float64(n))
		}
		sleep(ctx, time.Second)
	}
}

// lagNow reads the log lag for /api/status; 0 with SQLite, where append
// and apply are one transaction.
func (l *leadership) lagNow(ctx context.Context) (int64, error) {
	if l.shared == nil {
		return 0, nil
	}
	return l.shared.Lag(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
