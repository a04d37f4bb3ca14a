// Package fakehooks is a fake of GitHub's record of webhook deliveries for
// tests: the list and get operations of repository and organization hooks,
// answered in the published shapes (fixtures/github/rest/hooks), with the
// Link cursor, the rate-limit headers and the errors a test asks for.
package fakehooks

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pipeline-exporter/pipeline_exporter/fixtures"
)

// PageSize is the page GitHub serves for per_page=100, its maximum.
const PageSize = 100

// Delivery is one attempt GitHub recorded: a delivery or a redelivery.
type Delivery struct {
	ID          int64
	GUID        string
	Event       string
	Action      string
	DeliveredAt time.Time
	Redelivery  bool
	// StatusCode is the receiver's answer, 0 when none came.
	StatusCode int
	// Payload is the webhook body GitHub sent (a JSON object).
	Payload []byte
}

// Request is one request the fake answered.
type Request struct {
	Path string // e.g. /repos/o/r/hooks/1/deliveries
	// Cursor is the list's cursor parameter, "" for a first page.
	Cursor string
	Code   int
}

// Server serves GET /repos/{owner}/{repo}/hooks/{id}/deliveries[/{delivery_id}]
// and the same under /orgs/{org}/hooks/{id}.
type Server struct {
	*httptest.Server

	mu         sync.Mutex
	deliveries map[string][]Delivery // by hook path, newest first
	fail       map[string]int        // hook path → the status of every answer
	failGets   map[string]int        // hook path → gets answered 502 before the next fails
	failPage   map[string]int        // hook path → list page (1-based) answered 502
	// limitedUntil, when set, answers every request 403 with no requests
	// left until then, as GitHub does when the rate limit is spent.
	limitedUntil time.Time
	requests     []Request
}

// New starts a fake. Close it when done.
func New() *Server {
	s := &Server{
		deliveries: map[string][]Delivery{},
		fail:       map[string]int{},
		failGets:   map[string]int{},
		failPage:   map[string]int{},
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// RepoHook is the path of a repository's hook; OrgHook of an organization's.
func RepoHook(repo string, id int64) string { return fmt.Sprintf("/repos/%s/hooks/%d", repo, id) }

// OrgHook is the path of an organization's hook.
func OrgHook(org string, id int64) string { return fmt.Sprintf("/orgs/%s/hooks/%d", org, id) }

// Add records attempts of a hook.
func (s *Server) Add(hook string, ds ...Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := append(s.deliveries[hook], ds...)
	slices.SortStableFunc(all, func(a, b Delivery) int {
		if c := b.DeliveredAt.Compare(a.DeliveredAt); c != 0 {
			return c
		}
		return int(b.ID - a.ID)
	})
	s.deliveries[hook] = all
}

// Fail answers every request of a hook with code (0: answer again).
func (s *Server) Fail(hook string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[hook] = code
}

// FailPage answers page n (1-based) of a hook's list 502 (0: no longer).
func (s *Server) FailPage(hook string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPage[hook] = n
}

// FailGetsAfter answers the gets of a hook 502 once n more were answered
// (-1: no longer).
func (s *Server) FailGetsAfter(hook string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 0 {
		delete(s.failGets, hook)
		return
	}
	s.failGets[hook] = n
}

// RateLimit makes the fake answer as GitHub does once the token's rate
// limit is spent, until the given reset (the zero time: no longer).
func (s *Server) RateLimit(reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limitedUntil = reset
}

// Requests returns the requests answered so far and forgets them.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.requests
	s.requests = nil
	return r
}

var route = regexp.MustCompile(`^(/(?:repos/[^/]+/[^/]+|orgs/[^/]+)/hooks/[0-9]+)/deliveries(?:/([0-9]+))?$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := route.FindStringSubmatch(r.URL.Path)
	cursor := r.URL.Query().Get("cursor")
	code := http.StatusOK
	defer func() { s.requests = append(s.requests, Request{Path: r.URL.Path, Cursor: cursor, Code: code}) }()
	// GitHub's headers on every answer.
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Resource", "core")
	if !s.limitedUntil.IsZero() {
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(s.limitedUntil.Unix(), 10))
		code = http.StatusForbidden
		writeError(w, code, "API rate limit exceeded for user ID 1.")
		return
	}
	h.Set("X-RateLimit-Remaining", "4990")
	h.Set("X-RateLimit-Used", "10")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	if r.Method != http.MethodGet || m == nil {
		code = http.StatusNotFound
		writeError(w, code, "Not Found")
		return
	}
	hook := m[1]
	if c := s.fail[hook]; c != 0 {
		code = c
		switch c {
		case http.StatusForbidden:
			writeError(w, c, "Resource not accessible by personal access token")
		case http.StatusNotFound:
			writeError(w, c, "Not Found")
		default:
			writeError(w, c, http.StatusText(c))
		}
		return
	}
	if m[2] != "" {
		code = s.get(w, hook, m[2])
		return
	}
	code = s.list(w, r, hook, cursor)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, hook, cursor string) int {
	start := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Invalid cursor")
			return http.StatusBadRequest
		}
		start = n
	}
	if p := s.failPage[hook]; p > 0 && start/PageSize+1 == p {
		writeError(w, http.StatusBadGateway, "Server Error")
		return http.StatusBadGateway
	}
	all := s.deliveries[hook]
	start = min(start, len(all))
	end := min(start+PageSize, len(all))
	template := listItem()
	items := make([]json.RawMessage, 0, end-start)
	for _, d := range all[start:end] {
		items = append(items, fixtures.MustEdit(template, d.values()))
	}
	if end < len(all) {
		next := fmt.Sprintf("%s%s?per_page=%d&cursor=%d", s.URL, r.URL.Path, PageSize, end)
		w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, next))
	}
	body, _ := json.Marshal(items)
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return http.StatusOK
}

func (s *Server) get(w http.ResponseWriter, hook, idText string) int {
	if n, ok := s.failGets[hook]; ok {
		if n == 0 {
			writeError(w, http.StatusBadGateway, "Server Error")
			return http.StatusBadGateway
		}
		s.failGets[hook] = n - 1
	}
	id, _ := strconv.ParseInt(idText, 10, 64)
	i := slices.IndexFunc(s.deliveries[hook], func(d Delivery) bool { return d.ID == id })
	if i < 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return http.StatusNotFound
	}
	d := s.deliveries[hook][i]
	var payload any
	if err := json.Unmarshal(d.Payload, &payload); err != nil {
		panic(fmt.Sprintf("fakehooks: payload of delivery %d: %v", d.ID, err))
	}
	values := d.values()
	values["request.headers.X-GitHub-Delivery"] = d.GUID
	values["request.headers.X-GitHub-Event"] = d.Event
	values["request.payload"] = payload
	body := fixtures.MustEdit(fixtures.MustLoad("github/rest/hooks/get-webhook-delivery.json"), values)
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return http.StatusOK
}

// values are the attempt's values at the keys of the published shapes.
func (d Delivery) values() map[string]any {
	return map[string]any{
		"id":           d.ID,
		"guid":         d.GUID,
		"delivered_at": d.DeliveredAt.UTC().Format(time.RFC3339),
		"redelivery":   d.Redelivery,
		"status":       status(d.StatusCode),
		"status_code":  d.StatusCode,
		"event":        d.Event,
		"action":       nullable(d.Action),
	}
}

// listItem is the published list's first item, the shape of every item.
func listItem() []byte {
	var items []json.RawMessage
	if err := json.Unmarshal(fixtures.MustLoad("github/rest/hooks/list-webhook-deliveries.json"), &items); err != nil || len(items) == 0 {
		panic(fmt.Sprintf("fakehooks: the published list: %v", err))
	}
	return items[0]
}

// status is GitHub's text for a delivery's outcome.
func status(code int) string {
	switch {
	case code == 0:
		return "failed to connect to host"
	case code >= 200 && code < 300:
		return "OK"
	}
	return "Invalid HTTP Response: " + strconv.Itoa(code)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"message":%q,"documentation_url":"https://docs.github.com/rest/webhooks/repo-deliveries","status":"%d"}`, msg, code)
}
