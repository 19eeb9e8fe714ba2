package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/shard"
)

// listLocal scans this replica's part of a List (after the caller's read
// barrier, if any).
func listLocal(l *shard.Shard, addr actor.Address, sc *pb.ListScan, out *pb.ReadResponse) (*pb.ReadResponse, error) {
	q := actor.IndexQuery{
		Tenant: addr.Tenant, Workspace: addr.Workspace, ActorType: addr.ActorType, Field: sc.Field,
		Lo: sc.Lo, Hi: sc.Hi, LoExcl: sc.LoExcl, HiExcl: sc.HiExcl, Prefix: sc.Prefix, Limit: int(sc.Limit),
	}
	if sc.HasAfter {
		q.After = sc.After
		if q.After == nil {
			q.After = []byte{}
		}
	}
	q.MaxBytes = ListShardBytes
	items, count, more, err := l.Store().ScanIndex(q)
	if err != nil {
		return nil, err
	}
	out.Count, out.More = count, more
	out.Items = make([]*pb.ListItem, 0, len(items))
	for _, it := range items {
		out.Items = append(out.Items, &pb.ListItem{
			Id: it.ID, Version: it.Entity.Version, State: it.Entity.State, IndexValue: it.Value,
			Shard: l.ShardOf(actor.Address{Tenant: addr.Tenant, Workspace: addr.Workspace, ActorType: addr.ActorType, EntityID: it.ID}),
		})
	}
	return out, nil
}

// List implements gateway.Lister: every Raft group is read through its leader
// with a read barrier (as a linearizable Get), concurrently, and the
// pages are merged by (index value, id). Each shard gives at most limit
// items after sc.After, so the merged first limit items are exactly the
// first limit of the whole scope after sc.After at the shards' read points.
func (n *Node) List(ctx context.Context, scope actor.Address, sc *pb.ListScan) (*pb.ListResponse, bool, error) {
	shards := n.router.state().Groups() // each group's store holds all of its shards' rows
	if shards == 0 {
		shards = n.router.shards
	}
	resp := &pb.ListResponse{AppliedIndexes: make(map[uint32]uint64, shards)}
	// The shards are read concurrently: each read is a leader round trip and
	// a barrier, and they are independent.
	parts := make([]*pb.ReadResponse, shards)
	errs := make([]error, shards)
	var wg sync.WaitGroup
	for id := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[id], errs[id] = n.router.readShard(ctx, id, scope, &pb.ReadRequest{List: cloneScan(sc, id)})
		}()
	}
	wg.Wait()
	var all []*pb.ListItem
	more := false
	// frontier is the smallest last item of a shard that has more: items
	// past it could precede that shard's next ones, so the page stops there.
	var frontier *pb.ListItem
	for id, r := range parts {
		if errs[id] != nil {
			return nil, false, fmt.Errorf("list shard %d: %w", id, errs[id])
		}
		resp.AppliedIndexes[uint32(id)] = r.AppliedIndex
		resp.Count += r.Count
		all = append(all, r.Items...)
		if r.More && len(r.Items) > 0 {
			more = true
			if last := r.Items[len(r.Items)-1]; frontier == nil || compareItems(last, frontier) < 0 {
				frontier = last
			}
		}
	}
	slices.SortFunc(all, compareItems)
	size := 0
	for i, it := range all {
		if i == int(sc.Limit) || (frontier != nil && compareItems(it, frontier) > 0) || (i > 0 && size >= ListPageBytes) {
			all, more = all[:i], true
			break
		}
		size += len(it.State)
	}
	resp.Items = all
	return resp, more, nil
}

// ListShardBytes bounds the states one shard returns for a List page, and
// ListPageBytes the page (each ends after the item that reaches it): a page
// of 1,000 documents of up to 4 MiB must not outgrow the 64 MiB messages
// nodes and clients accept.
const (
	ListShardBytes = 4 << 20
	ListPageBytes  = 16 << 20
)

func cloneScan(sc *pb.ListScan, shard uint32) *pb.ListScan {
	c := &pb.ListScan{
		Field: sc.Field, Lo: sc.Lo, Hi: sc.Hi, LoExcl: sc.LoExcl, HiExcl: sc.HiExcl, Prefix: sc.Prefix,
		After: sc.After, HasAfter: sc.HasAfter, Limit: sc.Limit, Shard: shard,
	}
	return c
}

// compareItems orders items by their key tail (index value, then id), the
// order of every shard's index.
func compareItems(a, b *pb.ListItem) int {
	if c := bytes.Compare(a.IndexValue, b.IndexValue); c != 0 {
		return c
	}
	return strings.Compare(a.Id, b.Id)
}
