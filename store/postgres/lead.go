package postgres

import (
	"context"
	"errors"
	"fmt"
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
	// renewEvery is how often the leader renews its lease, on its lock
	// connection, and renewTimeout how long a renewal may take before the
	// leadership is given up: a leader that cannot renew stops at once,
	// long before its lease (DefaultLeaderLease) runs out.
	renewEvery   = time.Second
	renewTimeout = time.Second
	// checkLeaseEvery is how often a contender reads the lease.
	checkLeaseEvery = time.Second
	// DefaultLeaderLease is how long a lease lasts without renewal before
	// another replica ends the holder's sessions and takes over.
	DefaultLeaderLease = 5 * time.Second
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
// ends: a renewal of the lease (every second, 1 s timeout) failed or found
// another leader's epoch (a restored database, a takeover), the lock
// connection was terminated, or Resign or Close was called. From then on
// Begin and Commit return ErrNotLeader; the caller stops its applier,
// timeouts, pollers and pruning, and may call Lead again to stand for
// election.
//
// The lease is what replaces a leader that stops working without dying
// (SIGSTOP, a stuck disk): it keeps its connection and so its lock, but
// stops renewing. A contender that finds the lease older than
// Options.LeaderLease on PostgreSQL's clock ends every session of the
// holder (pg_terminate_backend), which releases the lock and rolls back
// whatever the holder had in flight, and takes the lock.
func (s *Store) Lead(ctx context.Context) (lost <-chan struct{}, err error) {
	s.lead.mu.Lock()
	defer s.lead.mu.Unlock()
	if s.lead.conn != nil {
		return nil, errors.New("store: Lead called while leading")
	}
	for {
		conn, epoch, version, err := s.acquire(ctx)
		if err == nil {
			ch := make(chan struct{})
			wctx, cancel := context.WithCancel(context.Background())
			s.lead.conn, s.lead.stop, s.lead.done = conn, cancel, make(chan struct{})
			s.epoch.Store(epoch)
			s.logger.Info("Leading", "url", s.url, "epoch", epoch)
			go s.watch(wctx, conn, epoch, version, ch)
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

// acquire connects, waits for the lock (ending the sessions of a holder
// whose lease expired), and takes the leadership with a new epoch.
func (s *Store) acquire(ctx context.Context) (conn *pgx.Conn, epoch int64, version string, err error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	for k, v := range lockConnParams {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = s.appName
	conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, 0, "", s.errorf("%w", err)
	}
	var checked time.Time
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLock).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, 0, "", s.errorf("%w", err)
		}
		if got {
			break
		}
		if time.Since(checked) >= checkLeaseEvery {
			checked = time.Now()
			if err := s.endExpired(ctx, conn); err != nil {
				conn.Close(context.Background())
				return nil, 0, "", err
			}
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, 0, "", ctx.Err()
		case <-time.After(tryLockEvery):
		}
	}
	// The epoch is new, and unique in the cluster's life, even after a
	// dump of an older state was restored (transaction ids only grow).
	// Updating the state row waits for a deposed leader's commit that
	// holds it, and makes every later commit of that leader fail. The
	// lease names this store's sessions, renewed from now; its row's
	// version (xmin) tells a renewal that the row was written anew by a
	// restore.
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE state SET leader_epoch = GREATEST(leader_epoch + 1, pg_current_xact_id()::text::bigint)
			WHERE id = 1 RETURNING leader_epoch`).Scan(&epoch); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE lease SET epoch = $1, holder = $2, renewed_at = now() WHERE id = 1
			RETURNING xmin::text`, epoch, s.appName).Scan(&version)
	})
	if err != nil {
		conn.Close(context.Background())
		return nil, 0, "", s.errorf("%w", err)
	}
	return conn, epoch, version, nil
}

// endExpired ends every session of the lock's holder when its lease was
// not renewed for LeaderLease, on PostgreSQL's clock: the holder stopped
// working without dying, and its connections keep the lock. Only a holder
// named by the lease is ended, so a leader that took the lock a moment ago
// and has not written the lease yet is left alone.
func (s *Store) endExpired(ctx context.Context, conn *pgx.Conn) error {
	var (
		holder string
		ended  int
	)
	err := conn.QueryRow(ctx, `WITH expired AS (
			SELECT l.holder FROM lease l
			JOIN pg_locks k ON k.locktype = 'advisory' AND k.granted
				AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND k.classid::bigint = ($1::bigint >> 32) AND k.objid::bigint = ($1::bigint & 4294967295) AND k.objsubid = 1
			JOIN pg_stat_activity a ON a.pid = k.pid AND a.application_name = l.holder
			WHERE l.id = 1 AND l.renewed_at < now() - make_interval(secs => $2)
		)
		SELECT COALESCE((SELECT holder FROM expired), ''),
			(SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
			 WHERE a.datname = current_database() AND a.application_name = (SELECT holder FROM expired))`,
		leaderLock, s.opts.LeaderLease.Seconds()).Scan(&holder, &ended)
	if err != nil {
		return s.errorf("%w", err)
	}
	if holder != "" {
		s.logger.Warn("The leader's lease expired: ended its sessions to take over", "url", s.url, "holder", holder, "sessions", ended, "lease", s.opts.LeaderLease)
	}
	return nil
}

// watch renews the lease on the lock connection until a renewal fails or
// the leadership is given up, then ends the leadership.
func (s *Store) watch(ctx context.Context, conn *pgx.Conn, epoch int64, version string, lost chan struct{}) {
	defer close(s.lead.done)
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	var err error
	for err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			continue
		case <-t.C:
		}
		version, err = s.renew(ctx, conn, epoch, version)
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

// renew renews the lease of the leadership of epoch, within renewTimeout,
// if the lease row is still the version this leader last wrote, and
// returns its new version. A row of another version was written by
// someone else: another leader, or a restore, after which this leader's
// state is no longer the database's.
func (s *Store) renew(ctx context.Context, conn *pgx.Conn, epoch int64, version string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	var next string
	err := conn.QueryRow(ctx, `UPDATE lease SET renewed_at = now() WHERE id = 1 AND epoch = $1 AND xmin::text = $2
		RETURNING xmin::text`, epoch, version).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: the lease of epoch %d was written by someone else (another leader took over, or the database was restored)", ErrNotLeader, epoch)
	}
	if err != nil {
		return "", fmt.Errorf("renewing the lease: %w", err)
	}
	return next, nil
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
