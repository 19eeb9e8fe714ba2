package ingress_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

// BenchmarkIngressToCommit measures commands through JetStream to committed:
// b.N commands are published to the ingress subjects (asynchronously, 1,000
// entities over 8 shards) and the clock stops when the work-queue stream is
// empty, i.e. every message was acked, which happens only after its command
// was applied. The relay publishes the resulting events meanwhile, as in
// production.
//
//	go test -run '^$' -bench IngressToCommit -benchtime 20000x ./ingress/
func BenchmarkIngressToCommit(b *testing.B) {
	e := startEnv(b, 8, nil)
	const entities = 1000
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		e.publish(b, addCmd(fmt.Sprintf("e%d", i%entities), fmt.Sprintf("b%d", i)))
		if i%1000 == 999 {
			<-e.js.PublishAsyncComplete()
		}
	}
	<-e.js.PublishAsyncComplete()
	published := time.Since(start)
	testkit.Poll{Timeout: 10*time.Minute - time.Since(start), Every: 5 * time.Millisecond}.Eventually(b, "ingress drained", func() (bool, string) {
		m := e.streamMsgs(b, stream.IngressStream)
		return m == 0, fmt.Sprintf("%d messages left", m)
	})
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "commands/s")
	b.ReportMetric(float64(b.N)/published.Seconds(), "published/s")
}
