package ingress_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/rhizon/rhizon/ingress"
)

// BenchmarkEventsR3AtomicBatch measures what the relay pays JetStream per
// event: three clustered embedded servers (SyncAlways, as a node runs
// them), an R3 events stream with atomic publish, and 3 publishers (the
// relays of the shards one node leads) each committing atomic batches of
// the given size one after another. cpu-us/msg is the CPU of the whole
// process (the 3 servers and the publishers) per stored message.
// Its figures are in bench/MEASUREMENTS.md ("Figures once kept in code").
//
//	go test -run '^$' -bench EventsR3AtomicBatch -benchtime 20000x ./ingress/
func BenchmarkEventsR3AtomicBatch(b *testing.B) {
	nc := startR3(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "EV", Subjects: []string{"ev.>"}, Storage: jetstream.FileStorage, Replicas: 3,
		Duplicates: 2 * time.Minute, AllowAtomicPublish: true,
	}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 300)
	for _, size := range []int{1, 4, 16, 64} {
		for _, pubs := range []int{1, 3} {
			b.Run(fmt.Sprintf("batch=%d/publishers=%d", size, pubs), func(b *testing.B) {
				cpu0 := cpuTime()
				start := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, pubs)
				for p := range pubs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for sent := p * size; sent < b.N; sent += pubs * size {
							if err := atomicBatch(nc, min(size, b.N-sent), payload); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				el := time.Since(start)
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/msg")
				b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			})
		}
	}
}

func atomicBatch(nc *nats.Conn, n int, payload []byte) error {
	id := nuid.Next()
	for i := range n {
		m := nats.NewMsg("ev.e" + strconv.Itoa(i))
		m.Data = payload
		m.Header.Set(jetstream.MsgIDHeader, nuid.Next())
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < n-1 {
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		resp, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			return err
		}
		if len(resp.Data) == 0 || resp.Data[0] != '{' || bytes.Contains(resp.Data, []byte(`"error"`)) {
			return fmt.Errorf("batch refused: %s", resp.Data)
		}
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startR3 starts three clustered embedded servers and connects to the first.
func startR3(b *testing.B) *nats.Conn {
	nc, err := nats.Connect(ingress.StartNATSCluster(b)[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}
