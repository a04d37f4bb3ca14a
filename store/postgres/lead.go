package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaderLock is the advisory lock key of the leadership. Advisory locks
// are per database, so exporters on different databases do not compete.
const leaderLock int64 = 0x706970656c6561 // "pipelea"

const (
	// tryLockEvery is how often a contender asks for the lock: the bound
	// on how long a failover waits once the old leader's session is gone.
	tryLockEvery = 250 * time.Millisecond
	// checkEvery is how often the leader checks its lock connection, and
	// checkTimeout how long the check may take before the leadership is
	// considered lost.
	checkEvery   = 500 * time.Millisecond
	checkTimeout = time.Second
	// reconnectEvery is how long a contender waits after a connection
	// failure.
	reconnectEvery = time.Second
)

// lockConnParams make the server notice within about 4 s that the leader's
// machine vanished without closing its connection, so that the lock it
// held is released: keepalive probes after 2 s idle, every second, dropped
// after 2 unanswered, and a 4 s limit on unacknowledged data.
var lockConnParams = map[string]string{
	"tcp_keepalives_idle":     "2",
	"tcp_keepalives_interval": "1",
	"tcp_keepalives_count":    "2",
	"tcp_user_timeout":        "4000",
	"application_name":        "pipeline_exporter leader lock",
}

// leadership is the state of this store's bid for the leader lock.
type leadership struct {
	mu   sync.Mutex
	conn *pgx.Conn
	// stop ends the watcher; done is closed when it has returned.
	stop context.CancelFunc
	done chan struct{}
}

// Lead blocks until this store holds the leader lock (a PostgreSQL
// advisory lock on a connection of its own) or ctx ends. On success the
// store may Begin applier transactions; lost is closed when the leadership
// ends: the lock connection failed a check (made every 500 ms, 1 s
// timeout), was terminated, or Close was called. From then on Begin and
// Commit return ErrNotLeader; the caller stops its applier, timeouts,
// pollers and pruning, and may call Lead again to stand for election.
func (s *Store) Lead(ctx context.Context) (lost <-chan struct{}, err error) {
	s.lead.mu.Lock()
	defer s.lead.mu.Unlock()
	if s.lead.conn != nil {
		return nil, errors.New("store: Lead called while leading")
	}
	for {
		conn, epoch, err := s.acquire(ctx)
		if err == nil {
			ch := make(chan struct{})
			wctx, cancel := context.WithCancel(context.Background())
			s.lead.conn, s.lead.stop, s.lead.done = conn, cancel, make(chan struct{})
			s.epoch.Store(epoch)
			s.logger.Info("Leading", "url", s.url, "epoch", epoch)
			go s.watch(wctx, conn, ch)
			return ch, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.logger.Warn("Standing for leader failed, retrying", "url", s.url, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(reconnectEvery):
		}
	}
}

// acquire connects, waits for the lock and increments the leader epoch.
func (s *Store) acquire(ctx context.Context) (*pgx.Conn, int64, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	for k, v := range lockConnParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, 0, s.errorf("%w", err)
	}
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLock).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, 0, s.errorf("%w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, 0, ctx.Err()
		case <-time.After(tryLockEvery):
		}
	}
	// Waits for a deposed leader's commit that holds the state row, and
	// makes every later commit of that leader fail.
	var epoch int64
	if err := conn.QueryRow(ctx, `UPDATE state SET leader_epoch = leader_epoch + 1 WHERE id = 1 RETURNING leader_epoch`).Scan(&epoch); err != nil {
		conn.Close(context.Background())
		return nil, 0, s.errorf("%w", err)
	}
	return conn, epoch, nil
}

// watch checks the lock connection until it fails or the leadership is
// given up, then ends the leadership.
func (s *Store) watch(ctx context.Context, conn *pgx.Conn, lost chan struct{}) {
	defer close(s.lead.done)
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	var err error
	for err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			continue
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		_, err = conn.Exec(cctx, `SELECT 1`)
		cancel()
	}
	// Fence first: from here no transaction of this store commits.
	s.epoch.Store(0)
	close(lost)
	conn.Close(context.Background())
	s.lead.mu.Lock()
	s.lead.conn = nil
	s.lead.mu.Unlock()
	if ctx.Err() == nil {
		s.logger.Error("Lost the leadership", "url", s.url, "err", s.errorf("%w", err))
	}
}

// Resign gives up the leadership, if held, and waits until it has ended:
// for a leader whose applier stopped, so that the lock does not outlive
// it. Lead may be called again afterwards.
func (s *Store) Resign() {
	s.lead.mu.Lock()
	stop, done := s.lead.stop, s.lead.done
	s.lead.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
