package poller

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConditionalTransport(t *testing.T) {
	const lastModified = "Wed, 22 Jan 2020 19:33:08 GMT"
	var seen []http.Header
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Clone())
		w.Header().Set("Last-Modified", lastModified)
		w.Header().Set("X-RateLimit-Remaining", "4999")
		w.Header().Set("X-RateLimit-Reset", "1579725188")
		if r.Header.Get("If-Modified-Since") == lastModified {
			w.Header().Set("X-Served-By", "second")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By", "first")
		io.WriteString(w, `{"total_count":0}`)
	}))
	defer server.Close()

	m := newMetrics(prometheus.NewRegistry())
	api := &apiTransport{next: http.DefaultTransport, source: sourceGitHub, token: func() string { return "t" }, now: time.Now, metrics: m}
	client := &http.Client{Transport: newConditionalTransport(api)}
	get := func(conditional bool) (*http.Response, string) {
		t.Helper()
		ctx := withRequestInfo(context.Background(), endpointRuns, conditional)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server.URL+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	for i, tc := range []struct {
		conditional  bool
		wantSent     string // If-Modified-Since sent
		wantServedBy string
	}{
		{true, "", "first"},
		{true, lastModified, "second"}, // 304: the stored body, the 304's headers
		{true, lastModified, "second"},
		{false, "", "first"}, // job lists are not cached
	} {
		resp, body := get(tc.conditional)
		if got := seen[i].Get("If-Modified-Since"); got != tc.wantSent {
			t.Errorf("request %d sent If-Modified-Since %q, want %q", i+1, got, tc.wantSent)
		}
		if resp.StatusCode != http.StatusOK || body != `{"total_count":0}` {
			t.Errorf("request %d answered %d %q, want 200 with the body", i+1, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Served-By"); got != tc.wantServedBy {
			t.Errorf("request %d X-Served-By %q, want %q", i+1, got, tc.wantServedBy)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("request %d Content-Type %q, want the stored one", i+1, got)
		}
		if got := seen[i].Get("Authorization"); got != "Bearer t" {
			t.Errorf("request %d Authorization %q", i+1, got)
		}
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("github", "runs", "304")); got != 2 {
		t.Errorf("304s counted %v, want 2", got)
	}
}
