package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// streamsCost measures the exporter's ingest p99 at 500 req/s without and
// with 100 open /api/events streams, alternating, and returns the row.
func (b *bench) streamsCost(exp *receiver) ([]string, error) {
	const clients = 100
	var without, with []float64
	var events int64
	for round := 0; round < b.rounds; round++ {
		settle()
		res, err := b.load(exp.url, 16, 5000, 500)
		if err != nil {
			return nil, err
		}
		without = append(without, res.P99)

		settle()
		s, err := openStreams(strings.TrimSuffix(exp.url, "/webhooks/github")+"/api/events", clients)
		if err != nil {
			return nil, err
		}
		res, err = b.load(exp.url, 16, 5000, 500)
		got := s.close()
		if err != nil {
			return nil, err
		}
		with = append(with, res.P99)
		events += got
	}
	w, wo := median(with), median(without)
	return []string{fmt.Sprintf("exporter p99 at 500 req/s, 0 → %d open /api/events streams (ms)", clients),
		fmt.Sprintf("%.2f → %.2f = %.2f× (each stream received %d run events per run)", wo, w, w/wo, events/clients/int64(b.rounds)),
		"", "", "", "", "report", ""}, nil
}

// streams are open /api/events clients that read and count run events.
type streams struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events atomic.Int64
}

// streamAddresses is how many loopback addresses the streams come from:
// one client address may hold only a quarter of the exporter's streams.
const streamAddresses = 4

// openStreams opens n streams, spread over streamAddresses loopback
// addresses (127.0.0.1, 127.0.0.2, ...), and returns once the server has
// answered every one with 200.
func openStreams(url string, n int) (*streams, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &streams{cancel: cancel}
	clients := make([]*http.Client, streamAddresses)
	for i := range clients {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))}}
		clients[i] = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, DialContext: d.DialContext}}
	}
	ready := make(chan error, n)
	for i := 0; i < n; i++ {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := clients[i%streamAddresses].Do(req)
			if err != nil {
				ready <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ready <- fmt.Errorf("GET %s: %d", url, resp.StatusCode)
				return
			}
			ready <- nil
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				if string(sc.Bytes()) == "event: run" {
					s.events.Add(1)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-ready; err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// close ends the streams and returns how many run events they received.
func (s *streams) close() int64 {
	s.cancel()
	s.wg.Wait()
	return s.events.Load()
}
