package pipeline

import (
	"context"
	"time"
)

// Entry is one input in the delivery log: a webhook delivery as received, a
// poll result or a verify result. The log is the source of truth; runs are
// its projection, built by the Applier.
type Entry struct {
	// Seq is the entry's place in the log, assigned when it is appended.
	Seq int64
	// Source is where the entry came from.
	Source Source
	// DeliveryID is, with Source, the entry's unique key: a second entry
	// with the same key is a duplicate. Empty for entries that have no
	// sender's identity (poll and verify results), which never repeat.
	DeliveryID string
	// Kind is the delivery's event name (X-GitHub-Event, "INSERT", ...), or
	// "poll" or "verify".
	Kind       string
	ReceivedAt time.Time
	// Body is the delivery exactly as received, kept for audit and replay;
	// nil for poll and verify results.
	Body []byte
	// Events are what the source read from the entry; the Applier applies
	// them to the Tracker in order.
	Events []Event
}

// Entry kinds for inputs that are not webhook deliveries.
const (
	KindPoll    = "poll"
	KindVerify  = "verify"
	KindRecheck = "recheck"
)

// Result is what applying one entry did.
type Result struct {
	Outcome Outcome `json:"outcome"`
	RunIDs  []int64 `json:"run_ids,omitempty"`
	// Reason says why an entry was ignored.
	Reason string `json:"reason,omitempty"`
}

// AppliedEntry pairs a log entry with its result, for the commit that marks
// it applied.
type AppliedEntry struct {
	Seq    int64
	Result Result
}

// Restored is the committed state the Applier starts from.
type Restored struct {
	// Active are the runs that are not terminal.
	Active []*Run
	// LastFinished holds each pipeline's latest terminal run.
	LastFinished []*Run
	// LastSuccess holds each pipeline's latest successful run.
	LastSuccess []*Run
	// MaxRunID is the highest run id ever stored, pruned runs included.
	MaxRunID int64
	// MaxChangeSeq is the highest change sequence ever stored.
	MaxChangeSeq int64
	// Held are the job events the Tracker was keeping for runs not seen
	// yet when it last committed.
	Held []HeldJob
	// Discovered are the pipelines made from patterns, oldest first.
	Discovered []Discovered
}

// Storage is the durable side of the Applier, in the domain's terms. It is
// implemented by store/ for SQLite and PostgreSQL; only the Applier writes
// through it.
type Storage interface {
	// Begin starts a transaction of the Applier.
	Begin(ctx context.Context) (StorageTx, error)
	// Unapplied returns up to limit log entries that are not applied yet,
	// in sequence order.
	Unapplied(ctx context.Context, limit int) ([]*Entry, error)
	// Restore returns the committed state.
	Restore(ctx context.Context) (*Restored, error)
}

// StorageTx is one transaction of the Applier: the entries it appends, the
// entries it marks applied, the runs it changed and the Tracker's held
// state, committed together or not at all.
type StorageTx interface {
	// Append adds entries to the log and sets each one's Seq. An entry whose
	// (Source, DeliveryID) is already in the log is a duplicate: it is not
	// added and its Seq stays 0.
	Append(entries []*Entry) error
	// MarkApplied records the results of applied entries.
	MarkApplied(applied []AppliedEntry) error
	// SaveRuns inserts or replaces runs, each with its ChangeSeq.
	SaveRuns(runs []*Run) error
	// SaveHeld replaces the Tracker's held job events.
	SaveHeld(held []HeldJob) error
	// SaveDiscovered replaces the list of discovered pipelines.
	SaveDiscovered(discovered []Discovered) error
	// FindGitHubRun returns the stored run that follows the GitHub run id
	// and attempt, or nil when there is none.
	FindGitHubRun(runID int64, attempt int) (*Run, error)
	Commit() error
	Rollback() error
}

// PipelineSummary is what the metrics project for one pipeline, read from
// the committed runs.
type PipelineSummary struct {
	Pipeline   string
	InProgress int
	// LastFinished is the pipeline's most recent terminal run, or nil.
	LastFinished *Run
	// LastSuccess is the pipeline's most recent successful run, or nil.
	// When that is also the last finished run, both are the same *Run:
	// readers must not modify it.
	LastSuccess *Run
}

// History is the read side of the store, for the sinks (API, pages, live
// events, metrics). It sees only what the Applier committed.
type History interface {
	// Run returns the run with the given id, or ErrNotFound.
	Run(ctx context.Context, id int64) (*Run, error)
	// ListRuns returns the runs q selects, newest first.
	ListRuns(ctx context.Context, q RunQuery) ([]*Run, error)
	// ChangedAfter returns, in change order, at most limit runs whose
	// latest change has a ChangeSeq greater than seq.
	ChangedAfter(ctx context.Context, seq int64, limit int) ([]*Run, error)
	// LastChange returns the newest committed change sequence, 0 when no
	// run was ever stored.
	LastChange(ctx context.Context) (int64, error)
	// Summaries returns the summary of every pipeline that has runs.
	Summaries(ctx context.Context) ([]PipelineSummary, error)
}
