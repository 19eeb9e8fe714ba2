package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

const consoleAdminToken = "console-admin-token-0123456789abcdef"

// TestConsole_DeadLettersAsAdmin: an admin lists the dev node's dead
// letters, inspects a poison one (a producer's command for an actor type
// the node lacks) and redrives it; the rejected one cannot be redriven.
func TestConsole_DeadLettersAsAdmin(t *testing.T) {
	t.Parallel()
	needBinary(t)
	findBrowser(t) // skip or fail before starting any process
	dir := t.TempDir()
	d := startDev(t, dir)
	// An operator token, added to the dev node's token file (reloaded on change).
	tf := filepath.Join(dir, "token.json")
	raw, err := os.ReadFile(tf)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Tokens []map[string]any `json:"tokens"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	file.Tokens = append(file.Tokens, map[string]any{"token": consoleAdminToken, "role": "admin", "principal": map[string]string{"id": "ops", "type": "user"}})
	raw, _ = json.Marshal(file)
	if err := os.WriteFile(tf, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 20 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "admin token loaded", func() error {
		req, _ := http.NewRequest("GET", d.http+"/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("whoami: %d", resp.StatusCode)
		}
		return nil
	})

	publishJunkAndPoison(t, d)

	p := newPage(t, 3*time.Minute, false)
	p.login(d.http, consoleAdminToken, "ops")
	p.do("open Dead letters", chromedp.Click(css(`nav a[data-page="dead-letters"]`)))
	// The poison one is dead-lettered after 5 deliveries with backoff (about 8 s).
	p.until("a rejected and a poison dead letter", 60*time.Second, `(() => {
		const kinds = [...document.querySelectorAll("#dl-table tr[data-sequence]")].map(r => r.dataset.kind).sort().join(",");
		if (kinds !== "poison,rejected") { document.getElementById("dl-refresh").click(); return false; }
		return true; })()`)
	if dis := eval[bool](p, `document.querySelector('#dl-table tr[data-kind="rejected"] .dl-redrive').disabled`); !dis {
		t.Fatal("a rejected dead letter offers a redrive")
	}
	p.do("inspect the poison one", chromedp.Click(css(`#dl-table tr[data-kind="poison"] .dl-inspect`)))
	p.until("its command shown", 10*time.Second, `document.getElementById("dl-command").textContent.includes('"nosuch"')`)
	seq := eval[string](p, `document.querySelector('#dl-table tr[data-kind="poison"]').dataset.sequence`)
	p.do("redrive it", chromedp.Click(css(`#dl-table tr[data-kind="poison"] .dl-redrive`)))
	p.until("redriven", 20*time.Second, `document.getElementById("dl-state").dataset.redriven === `+js(seq)+` &&
		document.getElementById("dl-state").textContent.includes("stored as RHIZON_COMMANDS")`)
	p.screenshot("dead-letters")
	// Its actor type still missing, the redriven command is dead-lettered again.
	p.until("dead-lettered again", 60*time.Second, `(() => {
		if (document.querySelectorAll('#dl-table tr[data-kind="poison"]').length < 2) { document.getElementById("dl-refresh").click(); return false; }
		return true; })()`)
}

// publishJunkAndPoison publishes to dev node d's ingress a message that is
// not a command and a command of an actor type no node runs: both become
// dead letters (the junk for good, the poison one redrivable). It returns
// the poison command.
func publishJunkAndPoison(t *testing.T, d *devProcess) *pb.Command {
	t.Helper()
	prod := producerJS(t, d.nats, d.token)
	poison := &pb.Command{Type: "cmd.nosuch.add", Address: &pb.Address{Tenant: "dev", Workspace: "default", ActorType: "nosuch", EntityId: "x"},
		Payload: []byte(`{"amount":1}`), IdempotencyKey: "dl-1"}
	data, _ := proto.Marshal(poison)
	for _, body := range [][]byte{[]byte("not a command"), data} {
		msg := nats.NewMsg(stream.IngressSubject(shard.Of(poison.Address.ToActor(), 4)))
		msg.Data = body
		publishIngress(t, prod, msg)
	}
	return poison
}
