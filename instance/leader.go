package instance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/pause"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
)

// prunePeriod is how often the leader enforces retention in a shared
// store (SQLite prunes by itself).
const prunePeriod = time.Minute

// leaderTasks are the periodic components only the leader runs. Each is
// started, in its own goroutine, when a leadership term begins (after the
// Applier restored and was handed out), with the term's context, and the
// term waits for all of them to return after that context is cancelled:
// at most one replica runs them at a time, and never one that does not
// apply. A task hands what it finds to the Applier through in.Apply (an
// error wrapping pipeline.ErrUnavailable once the term ended) and must
// return soon after ctx is done.
//
// Leader-only work is added here, and only here.
func (in *Instance) leaderTasks() []func(ctx context.Context) {
	tasks := []func(ctx context.Context){
		// GitHub and Cloudflare Pages polling and the reading back of
		// missed GitHub deliveries, restarted on reload.
		in.pollers.run,
		// Rechecks of each pipeline's live build.
		in.verifier.recheck,
	}
	if in.shared != nil {
		tasks = append(tasks, in.prune)
	}
	return tasks
}

// prune enforces retention in the shared store every prunePeriod.
func (in *Instance) prune(ctx context.Context) {
	t := time.NewTicker(prunePeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := in.shared.Prune(ctx); err != nil && ctx.Err() == nil {
			in.logger.Error("Pruning the history failed", "err", err)
		}
	}
}

// lead runs the Applier at once with SQLite, or campaigns for the leader
// lock with PostgreSQL, until ctx is done. With SQLite it returns the
// error of an Applier that cannot restore: a start-up error.
func (in *Instance) lead(ctx context.Context) error {
	if in.shared == nil {
		return in.term(ctx, nil)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		in.watchLag(ctx)
	}()
	defer wg.Wait()
	in.campaign(ctx)
	return nil
}

// campaign waits for the leader lock, leads until the lock is lost, and
// tries again, until ctx is done.
func (in *Instance) campaign(ctx context.Context) {
	for ctx.Err() == nil {
		lost, err := in.shared.Lead(ctx)
		if err != nil {
			if ctx.Err() == nil {
				in.logger.Warn("Campaign for the leader lock failed; retrying", "err", err)
				_ = pause.For(ctx, time.Second)
			}
			continue
		}
		in.logger.Info("Leading: this instance applies the delivery log")
		termCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.term(termCtx, in.shared.Appended()) }()
		select {
		case <-lost:
			cancel()
			<-done
			in.logger.Warn("Lost the leader lock: stopped applying")
		case err := <-done:
			cancel()
			// The term ended by itself (shutdown, or an Applier that could
			// not restore): the lock must not outlive it, or this replica
			// would lead without applying and no other could take over.
			in.shared.Resign()
			if err != nil && ctx.Err() == nil {
				in.logger.Error("The applier stopped; gave up the leader lock", "err", err)
				_ = pause.For(ctx, time.Second)
			}
		}
	}
}

// term is one stretch of leadership: the Applier, the verify checks it
// starts and the leaderTasks, all stopped together when ctx is done. It
// returns the Applier's error: it could not restore, or its commit was
// refused because another replica leads (pipeline.ErrFenced).
func (in *Instance) term(ctx context.Context, appended <-chan struct{}) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	a, err := pipeline.NewApplier(ctx, in.store, in.safe.Get().Specs(), pipeline.ApplierOptions{
		Now:         time.Now,
		Observers:   in.observers,
		StartVerify: func(r *pipeline.Run) { in.verifier.start(ctx, &wg, r) },
		SharedLog:   in.shared != nil,
		Wake:        appended,
		// max_pipelines as the config said when this term began.
		MaxPipelines:     in.safe.Get().MaxPipelines,
		PipelinesLimited: func(n int) { in.limited.Add(float64(n)) },
		StepTimeout:      stepTimeout,
		Logger:           in.logger,
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Handed out only now that it restored: from here a delivery is
	// applied as it is appended.
	in.publish(a)
	for _, task := range in.leaderTasks() {
		wg.Go(func() { task(ctx) })
	}
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	// Withdrawn first: a delivery arriving from now on goes to the shared
	// log, and one the stopping Applier never takes is answered at once.
	in.publish(nil)
	cancel()
	if err == nil {
		err = <-done
	}
	return err
}

// publish hands a (nil: none) to the webhook handlers, pollers and verify
// checks, and says so in pipeline_exporter_leader: 1 exactly while an
// Applier that restored is handed out.
func (in *Instance) publish(a *pipeline.Applier) {
	in.mu.Lock()
	in.applier = a
	if a != nil {
		in.leader.Set(1)
	} else {
		in.leader.Set(0)
	}
	in.mu.Unlock()
}

func (in *Instance) current() *pipeline.Applier {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return in.applier
}

// Leading reports whether this instance applies the log now.
func (in *Instance) Leading() bool { return in.current() != nil }

// errNotLeading is what pollers and verify checks get between terms.
var errNotLeading = fmt.Errorf("%w: this instance does not lead", pipeline.ErrUnavailable)

// Time bounds of a webhook delivery: GitHub waits 10 s for an answer and
// never retries, so every delivery is answered within ingestBound, on the
// leader as on followers, even when a transaction is blocked by a lock
// another session holds.
const (
	// ingestBound is the time Ingest takes at most.
	ingestBound = 4 * time.Second
	// takeWithin is how long a delivery waits for the Applier to take it
	// into a transaction before it goes to the shared log instead.
	takeWithin = time.Second
	// stepTimeout bounds each transaction of the Applier: one blocked
	// longer is rolled back and its deliveries go to the shared log.
	stepTimeout = 2 * time.Second
	// fallbackWait is how long a leader whose own transaction failed waits
	// for an outcome of the delivery it then appended to the shared log.
	fallbackWait = 250 * time.Millisecond
)

// Ingest makes a webhook delivery durable, within ingestBound. On the
// leader, SQLite's or PostgreSQL's, the Applier appends and applies it in
// one transaction, shared with the deliveries arriving meanwhile. Another
// replica appends it to the shared log and waits briefly for the leader's
// outcome: `queued` when it does not come in time, since the delivery is
// durable and will be applied. So does the leader when its Applier does
// not take the delivery in time, has stopped, or fails to commit (it may
// have just lost the leadership, or be blocked by a lock): nothing was
// stored, and the shared log may still take the delivery. An error means
// nothing was stored.
func (in *Instance) Ingest(ctx context.Context, e *pipeline.Entry) (pipeline.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, ingestBound)
	defer cancel()
	tried := false
	if a := in.current(); a != nil {
		take := ctx
		if in.shared != nil {
			var cancel context.CancelFunc
			take, cancel = context.WithTimeout(ctx, takeWithin)
			defer cancel()
		}
		res, err := a.Ingest(take, e)
		if err == nil || in.shared == nil {
			return res, err
		}
		// A commit that failed may have reached the database before the
		// connection did not answer: the log may hold this delivery.
		tried = !errors.Is(err, pipeline.ErrStopped)
	}
	if in.shared == nil {
		return pipeline.Result{}, errNotLeading
	}
	if err := in.shared.AppendShared(ctx, e); err != nil {
		return pipeline.Result{}, err
	}
	if e.Seq == 0 {
		if !tried {
			return pipeline.Result{Outcome: pipeline.OutcomeDuplicate}, nil
		}
		// A duplicate of the delivery the failed commit stored is this
		// very delivery, committed for the first time: never `duplicate`.
		received, err := in.shared.ReceivedAt(ctx, e.Source, e.DeliveryID)
		if err != nil || !sameInstant(received, e.ReceivedAt) {
			return pipeline.Result{Outcome: pipeline.OutcomeDuplicate}, nil
		}
	}
	wait := ctx
	if tried {
		// This leader's own transaction failed or ran out of time just
		// now: it is not about to apply the entry, and its sender has
		// waited long already.
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, fallbackWait)
		defer cancel()
	}
	res, ok, err := in.shared.WaitResult(wait, e.Source, e.DeliveryID)
	if err != nil || !ok {
		// Durable already: a wait that fails is no reason for a retry.
		return pipeline.Result{Outcome: pipeline.OutcomeQueued}, nil
	}
	return res, nil
}

// leaderIngester hands deliveries read back from GitHub to the Applier of
// the current term, and refuses them between terms: unlike a webhook's,
// such a delivery is never appended by a replica that does not lead.
type leaderIngester struct{ in *Instance }

func (l leaderIngester) Ingest(ctx context.Context, e *pipeline.Entry) (pipeline.Result, error) {
	a := l.in.current()
	if a == nil {
		return pipeline.Result{}, errNotLeading
	}
	return a.Ingest(ctx, e)
}

// sameInstant compares a time as the store keeps it (PostgreSQL: to the
// microsecond) with the time it was given.
func sameInstant(stored, given time.Time) bool {
	d := stored.Sub(given)
	return d > -time.Microsecond && d < time.Microsecond
}

// Apply hands polled events and verify results to the Applier.
func (in *Instance) Apply(ctx context.Context, events []pipeline.Event) error {
	a := in.current()
	if a == nil {
		return errNotLeading
	}
	return a.Apply(ctx, events)
}

// watchLag keeps pipeline_exporter_log_lag_entries current.
func (in *Instance) watchLag(ctx context.Context) {
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := in.shared.Lag(qctx)
		cancel()
		if err == nil {
			in.lag.Set(float64(n))
		}
		_ = pause.For(ctx, time.Second)
	}
}

// lagNow reads the log lag for /api/status; 0 with SQLite, where append
// and apply are one transaction.
func (in *Instance) lagNow(ctx context.Context) (int64, error) {
	if in.shared == nil {
		return 0, nil
	}
	return in.shared.Lag(ctx)
}
