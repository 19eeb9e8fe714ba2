package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

func natsJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS %q: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// producerJS is a producer's connection to the embedded NATS at the
// banner's URL: its bearer token as the NATS token, in its own account.
// publishIngress publishes msg, retrying until JetStream stores it: the
// streams appear once the node is ready.
func publishIngress(t *testing.T, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	testkit.Poll{Timeout: 10 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "publish to ingress", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.PublishMsg(ctx, msg)
		return err
	})
}

func producerJS(t *testing.T, bannerURL, token string) jetstream.JetStream {
	t.Helper()
	u, err := url.Parse(bannerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = nil
	nc, err := nats.Connect(u.String(), nats.Token(token), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS %q as a producer: %v", u, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// metricSum adds up every sample of a Prometheus counter whose labels match.
func metricSum(t *testing.T, base, name, labelRe string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	re := regexp.MustCompile(`(?m)^` + name + `\{([^}]*)\} (\S+)$`)
	lre := regexp.MustCompile(labelRe)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		if lre.MatchString(m[1]) {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
	}
	return sum
}

// The node dies (SIGKILL, test-only failpoint) after the command committed
// and before its message was purged. After the restart the message is
// delivered again and found applied under its own command id (a replay of
// the first result): one effect, one event.
func TestIngress_CrashBetweenCommitAndPurgeIsAReplayNotASecondEffect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir, "RHIZON_FAILPOINTS=ingress-after-commit")
	js := producerJS(t, p.nats, p.token) // as an outside producer publishes
	cmd := &pb.Command{
		Type: "cmd.counter.add", Address: &pb.Address{Tenant: "dev", Workspace: "default", ActorType: "counter", EntityId: "fp"},
		Payload: []byte(`{"amount":1}`), IdempotencyKey: "fp-1",
	}
	data, _ := proto.Marshal(cmd)
	msg := nats.NewMsg(stream.IngressSubject(shard.Of(cmd.Address.ToActor(), 4)))
	msg.Data = data
	publishIngress(t, js, msg)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the failpoint did not kill the node")
	}
	if ws, ok := p.cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("node ended with %v, want killed by the failpoint", p.cmd.ProcessState)
	}

	p = startDev(t, dir)
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "the crashed command replayed from ingress", func() error {
		if n := metricSum(t, p.http, "rhizon_ingress_commands_total", `result="replay"`); n != 1 {
			return fmt.Errorf("replays from ingress: %v, want 1", n)
		}
		return nil
	})
	out, code := p.rhizon(t, "get", "counter/fp", "-o", "json")
	got := decode[struct {
		Version uint64
		State   struct{ Value int64 }
	}](t, out)
	if code != 0 || got.Version != 1 || got.State.Value != 1 {
		t.Fatalf("counter after crash and redelivery: exit %d %+v, want version 1 value 1", code, got)
	}
	js = natsJS(t, p.nats)
	testkit.Poll{Timeout: 10 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "producer stream purged", func() error {
		s, err := js.Stream(context.Background(), stream.ProducerStream(stream.ProducerAccount(p.token)))
		if err != nil {
			return err
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d ingress messages not purged", info.State.Msgs)
		}
		return nil
	})
}
