package e2e

import (
	"encoding/json"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pipeline-exporter/pipeline_exporter/internal/pgtest"
)

// There is no container engine in CI, so these tests do what docker compose
// does with deploy/docker-compose.yml, short of the container: each
// exporter service's command is the image's ENTRYPOINT and CMD (or the
// service's own), its environment the image's ENV, then the env file, then
// the service's environment; paths inside the container are the files and
// volumes compose mounts there; the service name postgres is a real
// PostgreSQL. Only the listen address is added, since every service here
// shares one network namespace.

// composeExporterService is what compose reads of a service.
type composeExporterService struct {
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Image       string            `yaml:"image"`
	EnvFile     string            `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Profiles    []string          `yaml:"profiles"`
}

// imageConfig is the final stage of a Dockerfile as the container sees it.
type imageConfig struct {
	Env        []string // KEY=value
	Entrypoint []string
	Cmd        []string
	Volumes    []string
}

// readImageConfig reads ENV, ENTRYPOINT, CMD and VOLUME of a Dockerfile's
// last stage (the exec form, the one the project's Dockerfiles use).
func readImageConfig(t *testing.T, path string) imageConfig {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var img imageConfig
	jsonArray := func(s string) []string {
		var v []string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("%s: %q is not an exec-form JSON array: %v", path, s, err)
		}
		return v
	}
	for _, line := range strings.Split(string(b), "\n") {
		instr, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest = strings.TrimSpace(rest)
		switch instr {
		case "FROM":
			img = imageConfig{}
		case "ENV":
			if !strings.Contains(rest, "=") {
				t.Fatalf("%s: ENV %q: want KEY=value", path, rest)
			}
			img.Env = append(img.Env, strings.Fields(rest)...)
		case "ENTRYPOINT":
			img.Entrypoint = jsonArray(rest)
		case "CMD":
			img.Cmd = jsonArray(rest)
		case "VOLUME":
			img.Volumes = append(img.Volumes, jsonArray(rest)...)
		}
	}
	return img
}

// envFile reads an env file as compose does: VAR=value lines, comments
// and blank lines skipped. uncomment names variables whose commented-out
// line ("#VAR=value") the operator is told to enable.
func envFile(t *testing.T, path string, uncomment ...string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	found := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		for _, name := range uncomment {
			if rest, ok := strings.CutPrefix(l, "#"+name+"="); ok {
				l = name + "=" + rest
				found[name] = true
			}
		}
		if l != "" && !strings.HasPrefix(l, "#") {
			env = append(env, l)
		}
	}
	for _, name := range uncomment {
		if !found[name] {
			t.Fatalf("%s has no line #%s=... to uncomment", path, name)
		}
	}
	return env
}

// composeRun is one exporter service as compose would start it.
type composeRun struct {
	name string
	args []string
	env  []string
	data string // the host directory standing for the container's /data
}

// composeExporters returns the exporter services that `docker compose
// [--profile profile] up` starts, with their effective command and
// environment. env is the env file's content.
func composeExporters(t *testing.T, profile string, env []string) []composeRun {
	t.Helper()
	var c struct {
		Services map[string]composeExporterService `yaml:"services"`
	}
	decodeComposeFile(t, &c)
	release := readImageConfig(t, "../deploy/Dockerfile.release")
	var runs []composeRun
	named := map[string]string{} // named volume → host directory
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		if s.Build == nil {
			continue // not built from this repository: not the exporter
		}
		if len(s.Profiles) > 0 && !slices.Contains(s.Profiles, profile) {
			continue
		}
		img := readImageConfig(t, filepath.Join("../deploy", s.Build.Context, s.Build.Dockerfile))
		// The image compose builds and the release image it names behave
		// the same.
		if !slices.Equal(img.Env, release.Env) || !slices.Equal(img.Entrypoint, release.Entrypoint) || !slices.Equal(img.Cmd, release.Cmd) {
			t.Errorf("%s: Dockerfile and Dockerfile.release differ in ENV/ENTRYPOINT/CMD: %+v, %+v", s.Build.Dockerfile, img, release)
		}
		// Container paths → this machine's.
		paths := map[string]string{}
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			target, _, _ = strings.Cut(target, ":")
			if strings.HasPrefix(src, ".") {
				host, err := filepath.Abs(filepath.Join("../deploy", src))
				if err != nil {
					t.Fatal(err)
				}
				paths[target] = host
				continue
			}
			if named[src] == "" {
				named[src] = t.TempDir()
			}
			paths[target] = named[src]
		}
		for _, v := range img.Volumes {
			if paths[v] == "" {
				paths[v] = t.TempDir() // an anonymous volume
			}
		}
		rewrite := func(s string) string {
			for target, host := range paths {
				if s == target || strings.HasPrefix(s, target+"/") {
					return host + strings.TrimPrefix(s, target)
				}
			}
			return s
		}
		entrypoint, cmd := img.Entrypoint, img.Cmd
		if s.Entrypoint != nil {
			entrypoint = s.Entrypoint
		}
		if s.Command != nil {
			cmd = s.Command
		}
		if len(entrypoint) == 0 || entrypoint[0] != "/bin/pipeline_exporter" {
			t.Fatalf("%s: entrypoint %v is not the exporter", name, entrypoint)
		}
		var args []string
		for _, a := range append(slices.Clone(entrypoint[1:]), cmd...) {
			if flag, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(flag, "--") {
				a = flag + "=" + rewrite(v)
			}
			if strings.HasPrefix(a, "--web.listen-address") {
				t.Fatalf("%s passes %s: the test sets the listen address", name, a)
			}
			args = append(args, a)
		}
		// Compose publishes the container's 8080, the default listen address.
		for _, p := range s.Ports {
			if !strings.HasSuffix(p, ":8080") {
				t.Errorf("%s publishes %q, not the exporter's :8080", name, p)
			}
		}
		var environ []string
		if s.EnvFile == "" {
			t.Fatalf("%s has no env_file", name)
		}
		for _, kv := range slices.Concat(img.Env, env, envList(s.Environment)) {
			k, v, _ := strings.Cut(kv, "=")
			environ = append(environ, k+"="+rewrite(v))
		}
		runs = append(runs, composeRun{name: name, args: args, env: environ, data: paths["/data"]})
	}
	return runs
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// startComposeRun starts one service's command with its environment (which
// overrides any of the same name in the test's) and waits until it is ready.
func startComposeRun(t *testing.T, r composeRun) *exporter {
	t.Helper()
	addr := freeAddr(t)
	return waitReady(t, run(t, nil, r.env, addr, append(r.args, "--web.listen-address="+addr)...))
}

// TestComposeDefaultProfile: `docker compose up` with the env file as the
// example ships it starts the exporter on SQLite in its /data volume.
func TestComposeDefaultProfile(t *testing.T) {
	runs := composeExporters(t, "", envFile(t, "../deploy/pipeline_exporter.env.example"))
	if len(runs) != 1 || runs[0].name != "exporter" {
		t.Fatalf("exporter services of the default profile: %+v, want exporter", runs)
	}
	startComposeRun(t, runs[0])
	if _, err := os.Stat(filepath.Join(runs[0].data, "pipeline_exporter.db")); err != nil {
		t.Errorf("the history is not in the /data volume: %v", err)
	}
}

// TestComposePostgresProfile: `docker compose --profile postgres up` with
// the env file's two PostgreSQL lines enabled, as its comment says, starts
// both exporters on the postgres service's database, one of them leading.
func TestComposePostgresProfile(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	db, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbPassword, _ := db.User.Password()

	var c struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	decodeComposeFile(t, &c)
	pg := c.Services["postgres"].Environment
	env := envFile(t, "../deploy/pipeline_exporter.env.example", "PIPELINE_EXPORTER_STORAGE_URL", "PGPASSWORD")
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PIPELINE_EXPORTER_STORAGE_URL":
			// The URL names the postgres service, its user and database,
			// and no password; the test's server stands in for it.
			u, err := url.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			if _, has := u.User.Password(); has {
				t.Errorf("the env file's URL holds a password; PGPASSWORD is for that")
			}
			if host, port, _ := net.SplitHostPort(u.Host); host != "postgres" || port != "5432" ||
				u.User.Username() != pg["POSTGRES_USER"] || strings.TrimPrefix(u.Path, "/") != pg["POSTGRES_DB"] {
				t.Errorf("the env file's URL %s is not the postgres service's user %s and database %s at postgres:5432", v, pg["POSTGRES_USER"], pg["POSTGRES_DB"])
			}
			u.Host, u.User, u.Path = db.Host, url.User(db.User.Username()), db.Path
			env[i] = k + "=" + u.String()
		case "PGPASSWORD":
			env[i] = k + "=" + dbPassword
		}
	}

	runs := composeExporters(t, "postgres", env)
	var names []string
	var replicas []*exporter
	for _, r := range runs {
		names = append(names, r.name)
		replicas = append(replicas, startComposeRun(t, r))
	}
	if !slices.Equal(names, []string{"exporter", "exporter-2"}) {
		t.Fatalf("exporter services of the postgres profile: %v, want exporter and exporter-2", names)
	}
	waitOneLeader(t, 10*time.Second, replicas...)
	for _, r := range runs {
		if _, err := os.Stat(filepath.Join(r.data, "pipeline_exporter.db")); err == nil {
			t.Errorf("%s wrote a SQLite history beside PostgreSQL", r.name)
		}
	}
}

func decodeComposeFile(t *testing.T, v any) {
	t.Helper()
	b, err := os.ReadFile("../deploy/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
