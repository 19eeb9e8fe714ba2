package cluster

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
)

// historyRecords is the API's form of a replica's decoded history. Record
// and API messages are wire-compatible (api/rhizonv1/record_compat_test.go),
// so each is re-marshalled rather than copied field by field: history is not
// a hot path, and a field added to both needs no change here.
func historyRecords(l *shard.Shard, addr actor.Address, after engine.Position, limit int, includeRejections bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	recs, next, more, err := l.History(addr, after, limit, includeRejections)
	if err != nil {
		return nil, after, false, err
	}
	out := make([]*pb.HistoryRecord, 0, len(recs))
	for _, r := range recs {
		hr, err := apiHistoryRecord(r)
		if err != nil {
			return nil, after, false, fmt.Errorf("cluster: convert record at %v: %w", r.Pos, err)
		}
		out = append(out, hr)
	}
	return out, next, more, nil
}

func apiHistoryRecord(r shard.HistoryRecord) (*pb.HistoryRecord, error) {
	if r.Event != nil {
		var ev pb.Event
		if err := remarshal(r.Event, &ev); err != nil {
			return nil, err
		}
		return &pb.HistoryRecord{Record: &pb.HistoryRecord_Event{Event: &ev}}, nil
	}
	var rj pb.Rejection
	if err := remarshal(r.Rejection, &rj); err != nil {
		return nil, err
	}
	return &pb.HistoryRecord{Record: &pb.HistoryRecord_Rejection{Rejection: &rj}}, nil
}

func remarshal(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}
