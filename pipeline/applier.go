package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"
)

// maxBatch bounds how many entries share one transaction, so that one
// commit never holds the write lock for long; concurrent deliveries beyond
// it wait for the next commit.
const maxBatch = 256

// ApplierOptions are the Applier's collaborators.
type ApplierOptions struct {
	// Now is the clock of the Tracker and of timeouts; time.Now when nil.
	Now func() time.Time
	// Observers hear every committed Update, in commit order, on the
	// Applier's goroutine: they must not block (metrics, live events,
	// tracing) nor change the Update's run, which they share.
	Observers []func(Update)
	// StartVerify is called, after the commit, for each run whose verify
	// stage became due; it must not block: the result comes back through
	// Apply.
	StartVerify func(*Run)
	// SharedLog says that other processes append to the log too (several
	// instances): the Applier then applies what they appended before each
	// batch and at least every second.
	SharedLog bool
	// Wake, when not nil, tells the Applier that another instance appended
	// to the shared log.
	Wake <-chan struct{}
	// MaxPipelines bounds the pipelines discovered from patterns;
	// DefaultMaxPipelines when 0.
	MaxPipelines int
	// PipelinesLimited, when not nil, hears after each commit how many
	// runs it turned away because MaxPipelines were discovered already.
	PipelinesLimited func(n int)
	// StepTimeout, when not 0, bounds each transaction (the reads of the
	// log before it, the commit): a transaction blocked longer, by a lock
	// another session holds or a stalled disk, is rolled back and its
	// submitters answered with ErrUnavailable, so that none waits on it
	// past this bound.
	StepTimeout time.Duration
	// Logger receives commit failures; nil discards them.
	Logger *slog.Logger
}

// ErrStopped is the answer to a submission the Applier will never take: it
// stopped, or stops before taking it. Nothing of the submission was stored.
var ErrStopped = fmt.Errorf("%w: the applier stopped", ErrUnavailable)

// ErrFenced is what a Storage returns when another instance applies the
// log now (its leadership is newer): this Applier's commits are refused,
// and Run returns it at once.
var ErrFenced = errors.New("another instance applies the log")

// Applier is the only writer of runs. One goroutine (Run) owns the Tracker:
// it appends the entries handed to it to the log, applies them and what
// the log holds unapplied, applies timeouts, and commits the changed runs
// with the applied entries in one transaction. Concurrent entries share a
// transaction (group commit). Submit is safe for concurrent use.
type Applier struct {
	st    Storage
	opts  ApplierOptions
	specs []Spec
	queue chan *submission
	// stopped is closed when Run has returned and answered what it queued.
	stopped chan struct{}

	// Owned by the Run goroutine.
	t *Tracker
	// changeSeq is the last change sequence committed.
	changeSeq int64
	// stale is set when a commit failed: the Tracker holds changes that
	// are not durable, so it is restored before the next batch.
	stale bool
	// failing is set from a failed step to the next successful commit:
	// a store that cannot write is logged once, not per delivery.
	failing bool
	// moreLog is set when the last read of unapplied entries was cut at
	// maxBatch: the next step reads on.
	moreLog bool
	// fenced is set when a commit was refused because another instance
	// leads: Run returns it.
	fenced error
}

// submission is one entry (or new specs) handed to the Applier.
type submission struct {
	entry *Entry
	// specs, when not nil, are the pipelines of a reload, and
	// maxPipelines its bound on discovered pipelines; entry is nil.
	specs        []Spec
	maxPipelines int
	// state goes from queued to taken (the Applier will answer) or to
	// abandoned (the submitter gave up before; the entry is dropped).
	state atomic.Int32
	done  chan answer
}

const (
	queued int32 = iota
	taken
	abandoned
)

type answer struct {
	result Result
	err    error
}

// NewApplier returns an Applier over st for the given pipelines, with the
// committed state restored from st (an error when it cannot be) and the
// log's unapplied entries applied. Run must be called for it to take
// submissions; until then they wait.
func NewApplier(ctx context.Context, st Storage, specs []Spec, opts ApplierOptions) (*Applier, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPipelines == 0 {
		opts.MaxPipelines = DefaultMaxPipelines
	}
	a := &Applier{st: st, opts: opts, specs: slices.Clone(specs), queue: make(chan *submission, maxBatch), stopped: make(chan struct{})}
	if err := a.restore(ctx); err != nil {
		return nil, err
	}
	// Before it is handed out, so that an instance that reports ready
	// shows every delivery it acknowledged before a crash.
	a.catchUp(ctx)
	return a, nil
}

// Ingest appends the entry to the log and applies it, and returns once
// both are committed. A duplicate entry (its source and delivery id are in
// the log already) changes nothing. Errors wrap ErrUnavailable: nothing was
// stored, and the sender may retry.
func (a *Applier) Ingest(ctx context.Context, e *Entry) (Result, error) {
	return a.submit(ctx, &submission{entry: e})
}

// Apply applies events that come with no delivery (polled state, verify
// results) as one log entry, and returns once they are committed.
func (a *Applier) Apply(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	e := &Entry{Kind: KindPoll, ReceivedAt: a.opts.Now(), Events: events}
	switch ev := events[0].(type) {
	case WorkflowRunEvent, WorkflowJobEvent:
		e.Source = SourceGitHub
	case PagesDeploymentEvent:
		e.Source = SourceCloudflare
	case VerifyResultEvent:
		e.Kind = KindVerify
	case RecheckResultEvent:
		e.Kind = KindRecheck
	case TriggerEvent:
		e.Source = ev.Trigger.Source
	}
	_, err := a.submit(ctx, &submission{entry: e})
	return err
}

// SetSpecs replaces the pipelines and the bound on discovered pipelines
// (DefaultMaxPipelines when 0) after a config reload, in order with the
// entries submitted before it. A lower bound makes no pipeline go: it
// stops further ones from being made.
func (a *Applier) SetSpecs(ctx context.Context, specs []Spec, maxPipelines int) error {
	if maxPipelines == 0 {
		maxPipelines = DefaultMaxPipelines
	}
	// Never nil, even for no pipelines: nil specs mark an entry.
	_, err := a.submit(ctx, &submission{specs: append([]Spec{}, specs...), maxPipelines: maxPipelines})
	return err
}

// submit queues s and waits for its answer. Until the Applier takes s, it
// gives up when ctx ends (ErrUnavailable) or the Applier stops
// (ErrStopped); once taken, the answer comes within the transaction's
// bound (StepTimeout), and it is the truth, whatever ctx says meanwhile.
func (a *Applier) submit(ctx context.Context, s *submission) (Result, error) {
	s.done = make(chan answer, 1)
	select {
	case <-a.stopped:
		return Result{}, ErrStopped
	default:
	}
	select {
	case a.queue <- s:
	case <-a.stopped:
		return Result{}, ErrStopped
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	var gaveUp error
	select {
	case ans := <-s.done:
		return ans.result, ans.err
	case <-a.stopped:
		gaveUp = ErrStopped
	case <-ctx.Done():
		gaveUp = fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	if s.state.CompareAndSwap(queued, abandoned) {
		return Result{}, gaveUp
	}
	// Taken: the answer is on its way, and it is the truth.
	ans := <-s.done
	return ans.result, ans.err
}

// Run applies what the log holds unapplied, then submissions and timeouts,
// until ctx is done (it returns nil) or a commit is refused because
// another instance leads (it returns ErrFenced). Either way it answers
// every submission still queued, and later ones are answered ErrStopped.
// Run may be called once.
func (a *Applier) Run(ctx context.Context) error {
	defer close(a.stopped)
	defer a.drain()
	// Other instances' appends since NewApplier caught up.
	a.catchUp(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for a.fenced == nil {
		timer.Reset(a.wait())
		var batch []*submission
		select {
		case <-ctx.Done():
			return nil
		case s := <-a.queue:
			batch = append(batch, s)
			// A reload ends the batch, so that what was submitted before
			// it is applied with the pipelines it was submitted under.
		drain:
			for len(batch) < maxBatch && batch[len(batch)-1].specs == nil {
				select {
				case s := <-a.queue:
					batch = append(batch, s)
				default:
					break drain
				}
			}
		case <-timer.C:
		case <-a.opts.Wake:
		}
		a.step(ctx, batch, a.opts.SharedLog || a.moreLog)
	}
	return a.fenced
}

// catchUp applies the entries appended but not applied (a crash between
// the two, or other instances' appends) before anything new. A failed
// step leaves the Applier stale, and Run restores it.
func (a *Applier) catchUp(ctx context.Context) {
	a.step(ctx, nil, true)
	for a.moreLog && !a.stale && a.fenced == nil && ctx.Err() == nil {
		a.step(ctx, nil, true)
	}
}

// wait is how long the loop may sleep: until the next timeout, at most a
// second (the shared log's poll, and retries after a failed commit).
func (a *Applier) wait() time.Duration {
	wait := time.Second
	if a.moreLog {
		return 0
	}
	if a.stale {
		return wait
	}
	if next, ok := a.t.NextDeadline(); ok {
		// The floor keeps a clock that disagrees with the Tracker's from
		// spinning the loop.
		wait = min(max(next.Sub(a.opts.Now()), 10*time.Millisecond), wait)
	}
	return wait
}

// drain answers what is still queued when the Applier stops.
func (a *Applier) drain() {
	for {
		select {
		case s := <-a.queue:
			if s.state.CompareAndSwap(queued, taken) {
				s.done <- answer{err: ErrStopped}
			}
		default:
			return
		}
	}
}

// restore builds the Tracker from the committed state.
func (a *Applier) restore(ctx context.Context) error {
	r, err := a.st.Restore(ctx)
	if err != nil {
		return fmt.Errorf("restoring the committed runs: %w", err)
	}
	a.t = NewTracker(a.specs, a.opts.Now)
	a.t.SetMaxPipelines(a.opts.MaxPipelines)
	// Before the runs, so that those of discovered pipelines find them.
	a.t.RestoreDiscovered(r.Discovered)
	a.t.Restore(r.Active, r.LastFinished, r.MaxRunID, r.Held)
	a.t.RestoreSuccess(r.LastSuccess)
	a.changeSeq = r.MaxChangeSeq
	a.stale = false
	if a.opts.StartVerify != nil {
		// At start, the checks under way died with the previous process;
		// after a failed commit, results may have been refused. A result
		// that comes twice finds the stage done and is ignored.
		for _, run := range a.t.PendingVerifies() {
			a.opts.StartVerify(run)
		}
	}
	return nil
}

// step is one transaction: the batch's entries appended, the log's
// unapplied entries (when readLog) and the batch's entries applied, due
// timeouts applied, and everything committed together; then the batch's
// reload, which Run puts last, takes effect.
func (a *Applier) step(ctx context.Context, batch []*submission, readLog bool) {
	if a.stale {
		// Restored before anything is taken: a submission waits in the
		// queue meanwhile, and its submitter may still give up on it.
		if err := a.restore(ctx); err != nil {
			if ctx.Err() == nil {
				a.logFailure("Restoring the committed runs failed", err)
			}
			for _, s := range batch {
				if s.state.CompareAndSwap(queued, taken) {
					s.done <- answer{err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
				}
			}
			return
		}
		readLog = true
	}
	if a.opts.StepTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.opts.StepTimeout)
		defer cancel()
	}
	var subs []*submission
	var reload *submission
	for _, s := range batch {
		if !s.state.CompareAndSwap(queued, taken) {
			continue
		}
		if s.specs != nil {
			reload = s
			continue
		}
		subs = append(subs, s)
	}
	a.apply(ctx, subs, readLog)
	if reload != nil {
		a.specs, a.opts.MaxPipelines = reload.specs, reload.maxPipelines
		a.t.SetSpecs(reload.specs)
		a.t.SetMaxPipelines(reload.maxPipelines)
		reload.done <- answer{}
	}
}

// apply commits one transaction for subs and answers them.
func (a *Applier) apply(ctx context.Context, subs []*submission, readLog bool) {
	results, updates, err := a.commit(ctx, subs, readLog)
	if err != nil {
		a.stale = true
		if errors.Is(err, ErrFenced) {
			a.fenced = err
			a.opts.Logger.Warn("Another instance applies the log: this one stops", "err", err)
		} else if !errors.Is(ctx.Err(), context.Canceled) {
			// Not shutting down: a failure, or a transaction past its bound.
			a.logFailure("Committing applied entries failed", err)
		}
		a.fail(subs, err)
		return
	}
	if a.failing {
		a.failing = false
		a.opts.Logger.Info("Committing applied entries again")
	}
	for _, u := range updates {
		for _, o := range a.opts.Observers {
			o(u)
		}
		if u.StartVerify && a.opts.StartVerify != nil {
			a.opts.StartVerify(u.Run)
		}
	}
	for i, s := range subs {
		s.done <- answer{result: results[i]}
	}
}

// logFailure logs the first failure of a series as an error, the rest at
// debug level.
func (a *Applier) logFailure(msg string, err error) {
	if a.failing {
		a.opts.Logger.Debug(msg, "err", err)
		return
	}
	a.failing = true
	a.opts.Logger.Error(msg, "err", err)
}

func (a *Applier) fail(subs []*submission, err error) {
	for _, s := range subs {
		s.done <- answer{err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	}
}

// commit runs the transaction of one step and returns each submission's
// result and the committed updates in order.
func (a *Applier) commit(ctx context.Context, subs []*submission, readLog bool) ([]Result, []Update, error) {
	var backlog []*Entry
	if readLog {
		var err error
		if backlog, err = a.st.Unapplied(ctx, maxBatch); err != nil {
			return nil, nil, fmt.Errorf("reading unapplied log entries: %w", err)
		}
		a.moreLog = len(backlog) == maxBatch
	}
	if len(subs) == 0 && len(backlog) == 0 && !a.due() {
		return nil, nil, nil
	}
	tx, err := a.st.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if tx != nil {
			_ = tx.Rollback()
		}
	}()
	entries := make([]*Entry, len(subs))
	for i, s := range subs {
		entries[i] = s.entry
	}
	if err := tx.Append(entries); err != nil {
		return nil, nil, fmt.Errorf("appending to the log: %w", err)
	}

	var updates []Update
	var applied []AppliedEntry
	applyOne := func(e *Entry) (Result, error) {
		res, ups, err := a.applyEntry(tx, e)
		if err != nil {
			return res, err
		}
		updates = append(updates, ups...)
		applied = append(applied, AppliedEntry{Seq: e.Seq, Result: res})
		return res, nil
	}
	for _, e := range backlog {
		if _, err := applyOne(e); err != nil {
			return nil, nil, err
		}
	}
	results := make([]Result, len(subs))
	for i, e := range entries {
		if e.Seq == 0 {
			results[i] = Result{Outcome: OutcomeDuplicate}
			continue
		}
		if results[i], err = applyOne(e); err != nil {
			return nil, nil, err
		}
	}
	if a.due() {
		updates = append(updates, a.t.Expire()...)
	}

	runs := a.changedRuns(updates)
	if err := tx.SaveRuns(runs); err != nil {
		return nil, nil, fmt.Errorf("saving runs: %w", err)
	}
	if held, changed := a.t.Held(); changed {
		if err := tx.SaveHeld(held); err != nil {
			return nil, nil, fmt.Errorf("saving held job events: %w", err)
		}
	}
	if discovered, changed := a.t.Discovered(); changed {
		if err := tx.SaveDiscovered(discovered); err != nil {
			return nil, nil, fmt.Errorf("saving discovered pipelines: %w", err)
		}
	}
	if err := tx.MarkApplied(applied); err != nil {
		return nil, nil, fmt.Errorf("marking entries applied: %w", err)
	}
	err = tx.Commit()
	tx = nil
	if err != nil {
		return nil, nil, err
	}
	a.changeSeq += int64(len(runs))
	if n := a.t.TakeLimited(); n > 0 && a.opts.PipelinesLimited != nil {
		a.opts.PipelinesLimited(n)
	}
	return results, updates, nil
}

// due reports whether a timeout has fallen due.
func (a *Applier) due() bool {
	next, ok := a.t.NextDeadline()
	return ok && !next.After(a.opts.Now())
}

// applyEntry applies one entry's events, first recalling from the history
// the finished GitHub runs they concern.
func (a *Applier) applyEntry(tx StorageTx, e *Entry) (Result, []Update, error) {
	var updates []Update
	reason := ""
	used := false
	for _, ev := range e.Events {
		if id, attempt, ok := a.t.NeedsRun(ev); ok {
			r, err := tx.FindGitHubRun(id, attempt)
			if err != nil {
				return Result{}, nil, fmt.Errorf("looking up GitHub run %d attempt %d: %w", id, attempt, err)
			}
			a.t.Recall(r)
		}
		ups, why := a.t.Apply(ev)
		updates = append(updates, ups...)
		if why == "" {
			used = true
		} else if reason == "" {
			reason = why
		}
	}
	if !used {
		if reason == "" {
			reason = "no events"
		}
		return Result{Outcome: OutcomeIgnored, Reason: reason}, nil, nil
	}
	return Result{Outcome: OutcomeAccepted, RunIDs: runIDs(updates)}, updates, nil
}

// changedRuns returns the latest state of each run the updates changed, in
// the order of their last change, each with its change sequence.
func (a *Applier) changedRuns(updates []Update) []*Run {
	last := make(map[int64]int, len(updates))
	for i, u := range updates {
		last[u.Run.ID] = i
	}
	runs := make([]*Run, 0, len(last))
	seq := a.changeSeq
	for i, u := range updates {
		if last[u.Run.ID] != i {
			continue
		}
		seq++
		u.Run.ChangeSeq = seq
		runs = append(runs, u.Run)
	}
	return runs
}

func runIDs(updates []Update) []int64 {
	ids := make([]int64, 0, len(updates))
	for _, u := range updates {
		if !slices.Contains(ids, u.Run.ID) {
			ids = append(ids, u.Run.ID)
		}
	}
	return ids
}
