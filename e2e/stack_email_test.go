package e2e

import (
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// stackEmail is one message Alertmanager delivered to the SMTP sink.
type stackEmail struct {
	From    string
	To      []string
	Subject string
	Text    string // the text/plain part, decoded
}

// stackSMTPSink is a real SMTP server on loopback that keeps every message,
// standing in for the mail relay alertmanager.yml names.
type stackSMTPSink struct {
	addr string

	mu   sync.Mutex
	got  []stackEmail
	errs []error
}

func newStackSMTPSink(t *testing.T) *stackSMTPSink {
	t.Helper()
	sink := &stackSMTPSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &stackSMTPSession{sink: sink}, nil
	}))
	srv.Domain = "localhost"
	// Alertmanager drops its idle connections when the test ends: that is
	// no error worth printing.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sink
}

type stackSMTPSession struct {
	sink *stackSMTPSink
	from string
	to   []string
}

func (s *stackSMTPSession) Reset()        { s.from, s.to = "", nil }
func (s *stackSMTPSession) Logout() error { return nil }
func (s *stackSMTPSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *stackSMTPSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *stackSMTPSession) Data(r io.Reader) error {
	e, err := parseStackEmail(r)
	s.sink.mu.Lock()
	defer s.sink.mu.Unlock()
	if err != nil {
		s.sink.errs = append(s.sink.errs, err)
		return err
	}
	e.From, e.To = s.from, s.to
	s.sink.got = append(s.sink.got, e)
	return nil
}

// parseStackEmail reads the subject and the text/plain part of a message as
// a mail client would: MIME words decoded, multipart walked, quoted-printable
// undone.
func parseStackEmail(r io.Reader) (stackEmail, error) {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return stackEmail{}, err
	}
	var e stackEmail
	if e.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return e, err
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return e, err
	}
	decode := func(enc string, body io.Reader) (string, error) {
		if strings.EqualFold(enc, "quoted-printable") {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		return string(b), err
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		e.Text, err = decode(msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		return e, err
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return e, errors.New("no text/plain part")
		}
		if err != nil {
			return e, err
		}
		if ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct == "text/plain" {
			e.Text, err = decode(p.Header.Get("Content-Transfer-Encoding"), p)
			return e, err
		}
	}
}

// wait returns the first message from the from-th on that match accepts,
// and the index after it.
func (s *stackSMTPSink) wait(t *testing.T, from int, timeout time.Duration, what string, match func(stackEmail) bool) (stackEmail, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		if len(s.errs) > 0 {
			s.mu.Unlock()
			t.Fatalf("undecodable email: %v", s.errs)
		}
		for i := from; i < len(s.got); i++ {
			if match(s.got[i]) {
				e := s.got[i]
				s.mu.Unlock()
				return e, i + 1
			}
		}
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var subjects []string
	for _, e := range s.got {
		subjects = append(subjects, e.Subject)
	}
	t.Fatalf("no email with %s within %v; got %q", what, timeout, subjects)
	return stackEmail{}, 0
}

// stackEmailTo is the address of an email receiver of alertmanager.yml.
func stackEmailTo(t *testing.T, receiver string) string {
	t.Helper()
	var cfg struct {
		Receivers []struct {
			Name         string `yaml:"name"`
			EmailConfigs []struct {
				To string `yaml:"to"`
			} `yaml:"email_configs"`
		} `yaml:"receivers"`
	}
	stackDecodeYAML(t, "../deploy/alertmanager/alertmanager.yml", &cfg)
	for _, r := range cfg.Receivers {
		if r.Name == receiver && len(r.EmailConfigs) == 1 {
			return r.EmailConfigs[0].To
		}
	}
	t.Fatalf("alertmanager.yml has no receiver %s with one email", receiver)
	return ""
}

// stackCheckFailureEmails follows PipelineFailure of pipeline site by email
// to the on-call address, as the webhook already saw it: the firing mail
// names the pipeline and the failed stage and links to the pipeline's failed
// runs; the resolved notice follows once a later run succeeded.
// resolvedBy runs the step that resolves it.
func stackCheckFailureEmails(t *testing.T, sink *stackSMTPSink, exporterURL, stage string, resolvedBy func()) {
	t.Helper()
	oncall := stackEmailTo(t, "email-oncall")
	toOncall := func(e stackEmail) bool { return len(e.To) == 1 && e.To[0] == oncall }
	firing, next := sink.wait(t, 0, 30*time.Second, "PipelineFailure firing to "+oncall, func(e stackEmail) bool {
		return toOncall(e) && strings.HasPrefix(e.Subject, "[FIRING") && strings.Contains(e.Subject, "PipelineFailure")
	})
	if want := "[FIRING:1] pipeline site: PipelineFailure"; firing.Subject != want {
		t.Errorf("subject = %q, want %q", firing.Subject, want)
	}
	// SMTP ends lines with CRLF.
	firing.Text = strings.ReplaceAll(firing.Text, "\r\n", "\n")
	for _, want := range []string{
		"Pipeline site: last run failed at stage " + stage + "\n",
		"Runs:    " + exporterURL + "/api/pipeline-runs?pipeline=site&status=failed,timed_out\n",
		"Runbook: https://github.com/pipeline-exporter/pipeline_exporter/blob/main/docs/runbook.md#pipelinefailure\n",
	} {
		if !strings.Contains(firing.Text, want) {
			t.Errorf("firing email lacks %q:\n%s", want, firing.Text)
		}
	}
	resolvedBy()
	resolved, _ := sink.wait(t, next, 30*time.Second, "PipelineFailure resolved to "+oncall, func(e stackEmail) bool {
		return toOncall(e) && strings.HasPrefix(e.Subject, "[RESOLVED]") && strings.Contains(e.Subject, "PipelineFailure")
	})
	resolved.Text = strings.ReplaceAll(resolved.Text, "\r\n", "\n")
	if !strings.Contains(resolved.Text, "RESOLVED\n\nPipeline site: last run failed") {
		t.Errorf("resolved email does not name the pipeline's failure:\n%s", resolved.Text)
	}
}
