// Command pipeline_exporter follows a publish end to end — trigger, GitHub
// Actions workflow run and jobs, Cloudflare Pages deployment, live site —
// keeps the run history on disk and exposes it to Prometheus.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/pipeline-exporter/pipeline_exporter/config"
	"github.com/pipeline-exporter/pipeline_exporter/store"
)

const exporterName = "pipeline_exporter"

func main() {
	os.Exit(exitCode(os.Args[1:]))
}

// flags holds every command-line setting; only this package parses them.
type flags struct {
	configFile      string
	configCheck     bool
	web             *web.FlagConfig
	telemetryPath   string
	webhookAddress  string
	webhookConfig   string
	storagePath     string
	storagePathSet  bool
	storageURL      string
	leaderLease     time.Duration
	externalURL     string
	maxEventStreams int
	maxRecords      int
	retention       model.Duration
	backupTo        string
	promslogConfig  promslog.Config
	shutdownTimeout time.Duration
	stageBuckets    bool
}

// newApp declares every flag and command; --help lists each of them.
func newApp(f *flags) (app *kingpin.Application, serve, backup *kingpin.CmdClause) {
	app = kingpin.New(exporterName, "Prometheus exporter that follows a publish from its trigger through GitHub Actions and Cloudflare Pages to the live site.")
	app.Flag("config.file", "Pipeline exporter configuration file.").
		Envar("MONITORING_CONFIG").Default("pipeline_exporter.yml").StringVar(&f.configFile)
	app.Flag("config.check", "Validate the configuration file and exit with 0 (valid) or 1.").
		BoolVar(&f.configCheck)
	f.web = kingpinflag.AddFlags(app, ":8080")
	app.Flag("web.telemetry-path", "Path under which to expose metrics.").
		Default("/metrics").StringVar(&f.telemetryPath)
	app.Flag("webhook.listen-address", "Serve /webhooks/* on this separate address (and not on --web.listen-address). Needed when --web.config.file enables basic auth, which webhook senders cannot send.").
		Default("").StringVar(&f.webhookAddress)
	app.Flag("webhook.config.file", "exporter-toolkit web configuration (TLS) for the webhook listener.").
		Default("").StringVar(&f.webhookConfig)
	app.Flag("storage.path", "Directory of the run history database (created if missing).").
		Envar("MONITORING_DATA_DIR").Default("data").IsSetByUser(&f.storagePathSet).StringVar(&f.storagePath)
	app.Flag("storage.url", "PostgreSQL URL (postgres://user@host/db) of a history shared by several replicas, instead of --storage.path. libpq's PGPASSWORD and PGPASSFILE are honoured.").
		Envar("PIPELINE_EXPORTER_STORAGE_URL").Default("").StringVar(&f.storageURL)
	app.Flag("storage.leader-lease", "With --storage.url: how long the leader's lease lasts without renewal (it renews every second) before another replica ends its sessions and leads.").
		Default("5s").DurationVar(&f.leaderLease)
	app.Flag("web.external-url", "The URL under which users reach the exporter (for example behind a reverse proxy); makes the links in alerts and the run JSON's page_url absolute.").
		Default("").StringVar(&f.externalURL)
	app.Flag("web.max-event-streams", "Concurrent /api/events streams, a quarter of them per client address; past it new streams are answered 503.").
		Default("100").IntVar(&f.maxEventStreams)
	app.Flag("storage.max-records", "Runs kept in the history; the oldest are deleted past this (0 keeps all).").
		Default("100000").IntVar(&f.maxRecords)
	app.Flag("storage.retention", "How long runs and raw deliveries are kept (0 keeps them forever).").
		Default("90d").SetValue(&f.retention)
	app.Flag("metrics.stage-buckets", "Give the per-stage and verify histograms classic buckets as well as native ones, for a Prometheus without native histograms that needs per-stage quantiles (about 2.8 times the series).").
		BoolVar(&f.stageBuckets)
	app.Flag("web.shutdown-timeout", "How long a SIGTERM waits for in-flight requests before closing the store.").
		Default("30s").DurationVar(&f.shutdownTimeout)
	promslogflag.AddFlags(app, &f.promslogConfig)
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')

	serve = app.Command("serve", "Run the exporter (the default command).").Default()
	backup = app.Command("backup", "Write an online, consistent copy of the run history to a file; safe while the exporter runs.")
	backup.Flag("to", "Backup file to create (must not exist).").Required().StringVar(&f.backupTo)
	return app, serve, backup
}

// exitCode runs the command line args and returns the process exit code.
func exitCode(args []string) int {
	var f flags
	app, serveCmd, backupCmd := newApp(&f)
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", exporterName, err)
		return 2
	}
	logger := promslog.New(&f.promslogConfig)

	switch cmd {
	case backupCmd.FullCommand():
		return runBackup(f, logger)
	case serveCmd.FullCommand():
	}

	if f.configCheck {
		if _, err := config.Load(f.configFile); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := checkWebConfig(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stdout, "%s: configuration is valid\n", f.configFile)
		return 0
	}

	logger.Info("Starting "+exporterName, "version", version.Info())
	logger.Info("Build context", "build_context", version.BuildContext())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, f, logger); err != nil {
		logger.Error("Exiting", "err", err)
		return 1
	}
	logger.Info("Stopped cleanly")
	return 0
}

func runBackup(f flags, logger *slog.Logger) int {
	if f.storageURL != "" {
		// PIPELINE_EXPORTER_STORAGE_URL counts too: in a container that has
		// it, the SQLite path is not where the history is.
		logger.Error("Backup failed", "err", errBackupPostgres)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := store.BackupDir(ctx, f.storagePath, f.backupTo); err != nil {
		logger.Error("Backup failed", "err", err)
		return 1
	}
	logger.Info("Backup written", "file", f.backupTo)
	return 0
}

// errBackupPostgres is backup's answer for a history in PostgreSQL.
var errBackupPostgres = errors.New("backup copies the SQLite history under --storage.path; with --storage.url (or PIPELINE_EXPORTER_STORAGE_URL) the history is in PostgreSQL: back it up with pg_dump, for example pg_dump --format=custom --file=pipeline.dump \"$PIPELINE_EXPORTER_STORAGE_URL\"")

// newRegistry returns the registry of everything /metrics shows, with the
// Go, process and build-info collectors every Prometheus exporter has.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector(exporterName),
	)
	return reg
}
