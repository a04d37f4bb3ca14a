package poller

import (
	"context"
	"testing"
)

// BenchmarkUnchangedPoll measures one poll of an unchanged repository: one
// conditional request answered 304 and the replayed body decoded and found
// unchanged.
func BenchmarkUnchangedPoll(b *testing.B) {
	gt := newGitHubTest(b, nil)
	ctx := context.Background()
	if err := gt.poll(ctx); err != nil {
		b.Fatal(err)
	}
	_, nm0 := gt.fake.counts()
	b.ReportAllocs()
	for b.Loop() {
		if err := gt.poll(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if _, nm := gt.fake.counts(); nm-nm0 != b.N {
		b.Fatalf("%d of %d polls answered 304", nm-nm0, b.N)
	}
}
