package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	urls := []string{NewDatabase(t), NewDatabase(t)}
	if urls[0] == urls[1] {
		t.Fatalf("two databases share the URL %s", urls[0])
	}
	for _, u := range urls {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var version int
		if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if version/10000 != 15 {
			t.Errorf("server version %d, want 15", version)
		}
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	s := Shared(t)
	cfg, err := pgx.ParseConfig(s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = "not-" + s.Password()
	if conn, err := pgx.ConnectConfig(context.Background(), cfg); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected with a wrong password")
	}
}

func TestStopByPID(t *testing.T) {
	s, err := Start()
	if err != nil {
		if errors.Is(err, errNotInstalled) && os.Getenv("CI") != "true" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop: %v", s.dir, err)
	}
	if conn, err := pgx.Connect(context.Background(), s.URL("postgres")); err == nil {
		conn.Close(context.Background())
		t.Fatal("server still answers after Stop")
	}
}
