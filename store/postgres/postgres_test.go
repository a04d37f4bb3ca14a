package postgres

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
	"github.com/pipeline-exporter/pipeline_exporter/pipeline"
	"github.com/pipeline-exporter/pipeline_exporter/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openOnce is one attempt of OpenRetry: its errors are the ones OpenRetry
// logs at each failure and returns when it gives up.
func openOnce(ctx context.Context, url string, opts Options) (*Store, error) {
	s, err := parse(url, opts)
	if err != nil {
		return nil, err
	}
	if err := s.connect(ctx); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// open opens a store on url and closes it when the test ends.
func open(t testing.TB, url string, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := openOnce(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lead makes s the leader, failing the test if that takes over 10 s.
func lead(t testing.TB, s *Store) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lost, err := s.Lead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return lost
}

func TestStoreSuite(t *testing.T) {
	var dbs sync.Map // *testing.T → URL
	storetest.Run(t, func(t *testing.T) storetest.Store {
		url, ok := dbs.Load(t)
		if !ok {
			url = pgtest.NewDatabase(t)
			dbs.Store(t, url)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := openOnce(ctx, url.(string), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lead(ctx); err != nil {
			s.Close()
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T, st storetest.Store) []int64 {
		rows, err := st.(*Store).pool.Query(context.Background(), `SELECT seq FROM log ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	})
}

func TestRedacted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://exporter:s3cret@db:5432/pipes?sslmode=require", "postgres://exporter:xxxxx@db:5432/pipes?sslmode=require"},
		{"postgresql://exporter@db/pipes", "postgresql://exporter@db/pipes"},
		{"postgres://db/pipes?user=exporter&password=s3cret", "postgres://db/pipes?password=xxxxx&user=exporter"},
		{"postgres://db/pipes", "postgres://db/pipes"},
		{"host=db user=exporter password=s3cret dbname=pipes", "host=db user=exporter password=xxxxx dbname=pipes"},
		{"host=db password = 's3 cret' dbname=pipes", "host=db password = xxxxx dbname=pipes"},
		{"postgres://exporter:s3cret@db:bad port/pipes", "(unparsable URL)"},
	} {
		got := Redacted(tc.in)
		if got != tc.want {
			t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "s3 cret") {
			t.Errorf("Redacted(%q) = %q keeps the password", tc.in, got)
		}
	}
}

// TestOpenErrorsHidePassword opens stores that cannot work: a wrong
// password, a closed port, a bad URL. Each error names the URL and never
// holds the password.
func TestOpenErrorsHidePassword(t *testing.T) {
	srv := pgtest.Shared(t)
	good := pgtest.NewDatabase(t)
	const secret = "hunter2-not-the-password"
	wrongPassword := strings.Replace(good, ":"+srv.Password()+"@", ":"+secret+"@", 1)
	closedPort := "postgres://postgres:" + secret + "@127.0.0.1:1/db?connect_timeout=2"
	for _, tc := range []struct {
		name, url, want string
	}{
		{"wrong password", wrongPassword, "password authentication failed"},
		{"closed port", closedPort, "127.0.0.1:1"},
		{"bad URL", "postgres://postgres:" + secret + "@127.0.0.1:5432/db?sslmode=bogus", "sslmode"},
		{"bad keyword string", "host=127.0.0.1 password=" + secret + " port=notaport", "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := openOnce(ctx, tc.url, Options{})
			if err == nil {
				s.Close()
				t.Fatal("connecting succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, secret) {
				t.Errorf("error holds the password: %s", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not say %q", msg, tc.want)
			}
		})
	}
	// The password from PGPASSWORD is honoured, and hidden the same way.
	t.Run("PGPASSWORD", func(t *testing.T) {
		noPassword := strings.Replace(good, ":"+srv.Password()+"@", "@", 1)
		t.Setenv("PGPASSWORD", srv.Password())
		open(t, noPassword, Options{})
		t.Setenv("PGPASSWORD", secret)
		_, err := openOnce(context.Background(), noPassword, Options{})
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("Open with a wrong PGPASSWORD: %v", err)
		}
	})
}

// TestOpenRetry starts with the database unreachable and lets it appear:
// OpenRetry connects once it is there.
func TestOpenRetry(t *testing.T) {
	url := pgtest.NewDatabase(t)
	// The store is given a database that does not exist yet (the server
	// refuses the connection), and the test creates it.
	missing := strings.Replace(url, "/t_", "/late_", 1)
	name := missing[strings.LastIndex(missing, "/")+1 : strings.Index(missing, "?")]
	admin, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	done := make(chan error, 1)
	var s *Store
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		var err error
		s, err = OpenRetry(ctx, missing, Options{})
		done <- err
	}()
	time.Sleep(700 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("OpenRetry returned before the database existed: %v", err)
	default:
	}
	if _, err := admin.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)") })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// Giving up is an error that still names the URL.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := OpenRetry(short, strings.Replace(missing, "/late_", "/never_", 1), Options{}); err == nil || !strings.Contains(err.Error(), "never_") {
		t.Errorf("OpenRetry giving up: %v", err)
	}
}

// TestMigrationsOnce opens several stores on one new database at once and
// reopens it: the schema is created once and its version recorded.
func TestMigrationsOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := openOnce(context.Background(), url, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, url, Options{})
	var versions []int
	rows, _ := s.pool.Query(context.Background(), `SELECT version FROM schema_migrations ORDER BY version`)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(migrations) || versions[len(versions)-1] != len(migrations) {
		t.Errorf("schema_migrations %v, want 1..%d", versions, len(migrations))
	}
	// A database from a newer binary is refused.
	if err := s.migrate(context.Background(), migrations[:0]); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("migrate with fewer migrations than the database has: %v", err)
	}
}

func TestBeginNeedsLeadership(t *testing.T) {
	s := open(t, pgtest.NewDatabase(t), Options{})
	if _, err := s.Begin(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Begin without Lead: %v, want ErrNotLeader", err)
	}
	lead(t, s)
	tx, err := s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lead(context.Background()); err == nil {
		t.Error("a second Lead while leading succeeded")
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	now := at(0).Add(30 * 24 * time.Hour)
	url := pgtest.NewDatabase(t)
	s := open(t, url, Options{MaxRecords: 3, Retention: 7 * 24 * time.Hour, Now: func() time.Time { return now }})
	lead(t, s)
	old := now.Add(-8 * 24 * time.Hour)
	recent := now.Add(-time.Hour)
	runAt := func(id int64, status pipeline.Status, seen time.Time) *pipeline.Run {
		return &pipeline.Run{ID: id, Pipeline: "site", Status: status, CreatedAt: seen, SeenAt: seen, ChangeSeq: id,
			Trigger: pipeline.Trigger{Source: pipeline.SourceSupabase}}
	}
	oldApplied := &pipeline.Entry{Source: pipeline.SourceSupabase, DeliveryID: "old-applied", Kind: "INSERT", ReceivedAt: old}
	oldWaiting := &pipeline.Entry{Source: pipeline.SourceSupabase, DeliveryID: "old-waiting", Kind: "INSERT", ReceivedAt: old}
	newApplied := &pipeline.Entry{Source: pipeline.SourceSupabase, DeliveryID: "new-applied", Kind: "INSERT", ReceivedAt: recent}
	commit(t, s, func(tx pipeline.StorageTx) error {
		if err := tx.Append([]*pipeline.Entry{oldApplied, oldWaiting, newApplied}); err != nil {
			return err
		}
		if err := tx.MarkApplied([]pipeline.AppliedEntry{
			{Seq: oldApplied.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}},
			{Seq: newApplied.Seq, Result: pipeline.Result{Outcome: pipeline.OutcomeAccepted}},
		}); err != nil {
			return err
		}
		// Run 1 is old and still running: age spares it, as the count
		// spares the running run 3; the count deletes the oldest finished
		// runs 2, 4 and 5.
		return tx.SaveRuns([]*pipeline.Run{
			runAt(1, pipeline.StatusRunning, old),
			runAt(2, pipeline.StatusSuccess, recent), runAt(3, pipeline.StatusRunning, recent),
			runAt(4, pipeline.StatusFailed, recent), runAt(5, pipeline.StatusSuccess, recent),
			runAt(6, pipeline.StatusSuccess, recent),
		})
	})
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	runs, err := s.ListRuns(ctx, pipeline.RunQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got := runIDs(runs); !slices.Equal(got, []int64{6, 3, 1}) {
		t.Errorf("runs after pruning %v, want [6 3 1]", got)
	}
	var keys []string
	rows, _ := s.pool.Query(ctx, `SELECT delivery_id FROM log ORDER BY seq`)
	if keys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "old-waiting,new-applied" {
		t.Errorf("log after pruning: %v, want the unapplied old entry and the recent one", keys)
	}
	r, err := s.Restore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxRunID != 6 || r.MaxChangeSeq != 6 {
		t.Errorf("after pruning MaxRunID %d, MaxChangeSeq %d, want 6 and 6", r.MaxRunID, r.MaxChangeSeq)
	}
	// Pruning every finished run keeps the highest id: ids are never
	// reused.
	now = now.Add(30 * 24 * time.Hour)
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err = s.Restore(ctx); err != nil || r.MaxRunID != 6 || len(r.LastFinished) != 0 || !slices.Equal(runIDs(r.Active), []int64{1, 3}) {
		t.Errorf("after pruning every finished run: %+v, %v; want MaxRunID 6 and the running runs 1 and 3 only", r, err)
	}
}

func commit(t *testing.T, s *Store, fn func(tx pipeline.StorageTx) error) {
	t.Helper()
	tx, err := s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

func runIDs(runs []*pipeline.Run) []int64 {
	out := []int64{}
	for _, r := range runs {
		out = append(out, r.ID)
	}
	return out
}

// TestErrorsCounted: a write the store could not make counts in Errors,
// which pipeline_exporter_store_errors_total exports; a failed read does
// not (the collector counts the reads it makes).
func TestErrorsCounted(t *testing.T) {
	s := open(t, pgtest.NewDatabase(t), Options{})
	lead(t, s)
	ctx := context.Background()
	s.pool.Close()
	if _, err := s.ListRuns(ctx, pipeline.RunQuery{Limit: 1}); err == nil {
		t.Fatal("ListRuns on a closed pool succeeded")
	}
	if _, err := s.Begin(ctx); !errors.Is(err, pipeline.ErrUnavailable) {
		t.Fatalf("Begin on a closed pool: %v, want ErrUnavailable", err)
	}
	if got := s.Errors(); got != 1 {
		t.Errorf("Errors() = %d after a failed read and a failed write, want 1", got)
	}
}

// TestRunCount: the kept count of runs follows inserts, replacements and
// pruning, and a version 1 database gets the count of the runs it holds.
func TestRunCount(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	v1 := &Store{pool: pool}
	if err := v1.migrate(ctx, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO runs SELECT i, 'site', 'success', 'github', now(), now(), now(), 1, NULL, NULL, i, '{}'
		FROM generate_series(1, 5) i`); err != nil {
		t.Fatal(err)
	}
	pool.Close()

	now := at(0).Add(30 * 24 * time.Hour)
	s := open(t, url, Options{MaxRecords: 4, Now: func() time.Time { return now }})
	lead(t, s)
	count := func(want int64, when string) {
		t.Helper()
		if n, err := s.RunCount(ctx); err != nil || n != want {
			t.Errorf("%s: RunCount = %d, %v; want %d", when, n, err, want)
		}
	}
	count(5, "after the migration")
	finished := func(id int64) *pipeline.Run {
		return &pipeline.Run{ID: id, Pipeline: "site", Status: pipeline.StatusSuccess, CreatedAt: now, SeenAt: now, ChangeSeq: id,
			Trigger: pipeline.Trigger{Source: pipeline.SourceSupabase}}
	}
	commit(t, s, func(tx pipeline.StorageTx) error {
		return tx.SaveRuns([]*pipeline.Run{finished(5), finished(6), finished(7)})
	})
	count(7, "after replacing run 5 and adding 6 and 7")
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	count(4, "after pruning to max-records 4")
}
