package storage

import (
	"github.com/dgraph-io/badger/v4"
)

// TenantBytes measures what each tenant stores in this shard: the keys and
// values of its entities, history, idempotency results and timers (outbox
// rows are transient and not counted). It reads keys only (values stay in
// the value log), so its cost grows with the number of records, not their
// size; callers cache it (see the gateway's storage quota).
func (s *ShardStore) TenantBytes() (map[string]int64, error) {
	out := map[string]int64{}
	err := s.db().View(func(txn *badger.Txn) error {
		for _, tag := range []byte{tagEntity, tagHistory, tagResult, tagTimerEnt, tagTimerDue} {
			p := tagPrefix(s.id, tag)
			iopt := badger.DefaultIteratorOptions
			iopt.Prefix = p
			iopt.PrefetchValues = false
			it := txn.NewIterator(iopt)
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()[len(p):]
				if tag == tagTimerDue && len(k) >= 8 {
					k = k[8:] // due time, then the address
				}
				if len(k) < 2 {
					continue
				}
				n := int(k[0])<<8 | int(k[1])
				if len(k) < 2+n {
					continue
				}
				// EstimatedSize: key plus value size, without reading a
				// value kept in the value log.
				out[string(k[2:2+n])] += item.EstimatedSize()
			}
			it.Close()
		}
		return nil
	})
	return out, err
}
