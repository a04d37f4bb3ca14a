package config

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SafeConfig holds the current config and swaps it only when a reload
// succeeds, so a bad edit never takes a running exporter down.
type SafeConfig struct {
	path string
	// reloadMu serialises reloads, so a slow one cannot overwrite a newer one.
	reloadMu sync.Mutex
	mu       sync.RWMutex
	c        *Config
	now      func() time.Time

	success   prometheus.Gauge
	timestamp prometheus.Gauge
}

// NewSafeConfig returns a holder for the config file at path and registers
// its reload gauges on reg. It holds no config until Reload succeeds.
func NewSafeConfig(path string, reg prometheus.Registerer) *SafeConfig {
	s := &SafeConfig{
		path: path,
		now:  time.Now,
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful (1) or not (0).",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pipeline_exporter_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration reload, in seconds since the Unix epoch.",
		}),
	}
	reg.MustRegister(s.success, s.timestamp)
	return s
}

// Reload loads the file again, re-reading *_file secrets. On success it
// swaps the config in; on failure it keeps the previous one and returns
// the error.
func (s *SafeConfig) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	c, err := Load(s.path)
	if err != nil {
		s.success.Set(0)
		return err
	}
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
	s.success.Set(1)
	s.timestamp.Set(float64(s.now().UnixNano()) / 1e9)
	return nil
}

// Get returns the current config, nil before the first successful Reload.
// Callers must not modify it.
func (s *SafeConfig) Get() *Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.c
}
