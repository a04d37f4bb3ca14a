package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSafeConfigReload(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "pipeline_exporter.yml")
	tokenPath := filepath.Join(dir, "token")
	const good = "github: { owner: o, repo: r, token_file: token }\nwebhooks: { github: { secret: s } }\npipelines: [{ name: site, workflow: deploy.yml }]\n"
	const bad = "github: { owner: o, repo: r, token_file: token }\nwebhooks: { github: { secret: s } }\npipelines: [{ name: site, workflow: deploy.yml, verfy: {} }]\n"

	reg := prometheus.NewRegistry()
	s := NewSafeConfig(cfgPath, reg)
	var now time.Time
	s.now = func() time.Time { return now }
	if s.Get() != nil {
		t.Fatal("Get() before any Reload should be nil")
	}

	steps := []struct {
		name        string
		config      string // written when not empty
		token       string // written when not empty
		removeToken bool
		wantErr     string // substring
		wantToken   string // of the config Get returns afterwards
		wantSuccess float64
		wantStamp   int64 // Unix seconds
	}{
		{name: "first load", config: good, token: "token-one\n", wantToken: "token-one", wantSuccess: 1, wantStamp: 1000},
		{name: "token rotated in its file", token: "token-two", wantToken: "token-two", wantSuccess: 1, wantStamp: 2000},
		{name: "bad edit keeps the old config", config: bad, token: "token-three", wantErr: "pipeline_exporter.yml:3: pipelines[0].verfy: unknown key (did you mean verify?)", wantToken: "token-two", wantSuccess: 0, wantStamp: 2000},
		{name: "fixed edit loads", config: good, wantToken: "token-three", wantSuccess: 1, wantStamp: 4000},
		{name: "token file gone", removeToken: true, wantErr: "github.token_file: no such file", wantToken: "token-three", wantSuccess: 0, wantStamp: 4000},
	}
	for i, st := range steps {
		now = time.Unix(int64(i+1)*1000, 0)
		if st.config != "" {
			if err := os.WriteFile(cfgPath, []byte(st.config), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if st.token != "" {
			if err := os.WriteFile(tokenPath, []byte(st.token), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if st.removeToken {
			if err := os.Remove(tokenPath); err != nil {
				t.Fatal(err)
			}
		}
		err := s.Reload()
		switch {
		case st.wantErr == "" && err != nil:
			t.Errorf("%s: Reload: %v", st.name, err)
		case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)):
			t.Errorf("%s: Reload error = %v, want it to contain %q", st.name, err, st.wantErr)
		case err != nil && strings.Contains(err.Error(), "token-"):
			t.Errorf("%s: Reload error shows a token: %v", st.name, err)
		}
		if got := s.Get().GitHub.Token.Value(); got != st.wantToken {
			t.Errorf("%s: token = %q, want %q", st.name, got, st.wantToken)
		}
		if got := testutil.ToFloat64(s.success); got != st.wantSuccess {
			t.Errorf("%s: last_reload_successful = %v, want %v", st.name, got, st.wantSuccess)
		}
		if got := testutil.ToFloat64(s.timestamp); got != float64(st.wantStamp) {
			t.Errorf("%s: last_reload_success_timestamp_seconds = %v, want %v", st.name, got, st.wantStamp)
		}
	}

	n, err := testutil.GatherAndCount(reg,
		"pipeline_exporter_config_last_reload_successful",
		"pipeline_exporter_config_last_reload_success_timestamp_seconds")
	if err != nil || n != 2 {
		t.Errorf("registry holds %d of the 2 reload gauges (err %v)", n, err)
	}
}
