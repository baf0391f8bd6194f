package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The bundle as docs/bundle.md §2 defines it, decoded by fxamacker/cbor with the rules of §1:
// definite lengths, no duplicate keys, no tags, no fields version 1 does not define.
type bundleDoc struct {
	Format  string  `cbor:"format"`
	Version uint64  `cbor:"version"`
	Created float64 `cbor:"created"`
	Scope   struct {
		Farm    *string `cbor:"farm"`
		Field   *string `cbor:"field"`
		Gateway *string `cbor:"gateway"`
		From    float64 `cbor:"from"`
		To      float64 `cbor:"to"`
	} `cbor:"scope"`
	Log struct {
		Origin string `cbor:"origin"`
		Vkey   string `cbor:"vkey"`
	} `cbor:"log"`
	Checkpoints []struct {
		Note    []byte      `cbor:"note"`
		Anchors []anchorRef `cbor:"anchors"`
	} `cbor:"checkpoints"`
	Consistency [][][]byte `cbor:"consistency"`
	Hashes      []struct {
		_     struct{} `cbor:",toarray"`
		Begin uint64
		End   uint64
		Hash  []byte
	} `cbor:"hashes"`
	Registry []entryRow `cbor:"registry"`
	Messages []entryRow `cbor:"messages"`
	Notes    []string   `cbor:"notes,omitempty"`
	// version 2 only: the exporter's completeness claim, a deterministic-CBOR map and a signed
	// note by the log key committing to it (first line fieldproof/completeness/v1)
	Completeness *struct {
		Claim []byte `cbor:"claim"`
		Note  []byte `cbor:"note"`
	} `cbor:"completeness,omitempty"`
	// version 3 only: the completeness seal, the last leaf of the checkpoint of size Size, and
	// farm records (leaves of the seal's inner RFC 9162 tree) with their inner proofs
	Seal *struct {
		Size  uint64     `cbor:"size"`
		Entry []byte     `cbor:"entry"`
		Farms []sealFarm `cbor:"farms"`
	} `cbor:"seal,omitempty"`
}

type sealFarm struct {
	_        struct{} `cbor:",toarray"`
	Position uint64
	Record   []byte
	Proof    [][]byte
}

type anchorRef struct {
	Chain       string  `cbor:"chain" json:"chain"`
	Genesis     *string `cbor:"genesis,omitempty" json:"genesis,omitempty"`
	ChainID     *uint64 `cbor:"chain_id,omitempty" json:"chain_id,omitempty"`
	Tx          string  `cbor:"tx" json:"tx"`
	BlockNumber uint64  `cbor:"block_number" json:"block_number"`
	BlockID     string  `cbor:"block_id" json:"block_id"`
	BlockTime   uint64  `cbor:"block_time" json:"block_time"`
}

type entryRow struct {
	_     struct{} `cbor:",toarray"`
	Index uint64
	Data  []byte
}

var (
	bundleDec = mustDec(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	})
	hex32 = regexp.MustCompile(`^0x[0-9a-f]{64}$`)
)

// bundleSummary is what a bundle proved, compared with bundle.expected.json for testdata.
type bundleSummary struct {
	Origin      string
	Version     uint64
	Claim       bool
	SealFarms   int
	Sizes       []uint64
	Roots       []string
	Anchors     [][]anchorRef
	Consistency int
	Hashes      int
	Included    int
	Unproven    int
	Registry    []uint64
	Messages    []uint64
	Gateways    map[string]int
}

func (s *bundleSummary) String() string {
	claim := ""
	if s.Claim {
		claim = ", completeness claim signed by the log key"
	}
	if s.SealFarms > 0 {
		claim += fmt.Sprintf(", seal proven as its checkpoint's last leaf with %d farm record(s) in its tree", s.SealFarms)
	}
	return fmt.Sprintf("version %d, log %s: %d checkpoints %v signed by the pinned key, %d consistency proofs, %d entries proven by tlog.CheckRecord (%d without a checkpoint), %d registry events, %d messages with valid COSE signatures from %d gateways%s",
		s.Version, s.Origin, len(s.Sizes), s.Sizes, s.Consistency, s.Included, s.Unproven, len(s.Registry), len(s.Messages), len(s.Gateways), claim)
}

// checkClaim checks what a version 2 completeness claim commits to with generic tools: the
// note is a C2SP signed note by the log key (note.Open), its first lines name the claim type
// and the log, its last line is base64(SHA-256(claim)), and the claim is deterministic CBOR.
// What the claim says (scope, size, per-gateway ranges) is the fieldproof verifier's business.
func checkClaim(claim, noteBytes []byte, origin string, verifier note.Verifier) error {
	n, err := note.Open(noteBytes, note.VerifierList(verifier))
	if err != nil {
		return fmt.Errorf("note.Open: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	sum := sha256.Sum256(claim)
	if len(lines) < 3 || lines[0] != "fieldproof/completeness/v1" || lines[1] != origin ||
		lines[len(lines)-1] != "" || lines[len(lines)-2] != base64.StdEncoding.EncodeToString(sum[:]) {
		return fmt.Errorf("the signed text %q does not commit to this claim (SHA-256 %x) of log %s", n.Text, sum, origin)
	}
	return deterministic(claim)
}

func largestPow2Below(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// inclusionRanges: the leaf ranges [begin, end) of RFC 9162 PATH(index, D[size]), bottom-up
// (docs/bundle.md §3).
func inclusionRanges(index, size uint64) [][2]uint64 {
	var r [][2]uint64
	lo, hi := uint64(0), size
	for hi-lo > 1 {
		k := largestPow2Below(hi - lo)
		if index < lo+k {
			r = append(r, [2]uint64{lo + k, hi})
			hi = lo + k
		} else {
			r = append(r, [2]uint64{lo, lo + k})
			lo += k
		}
	}
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return r
}

type keyEvent struct {
	event   string
	pk      []byte
	fromSeq uint64
}

// checkBundle verifies a bundle with the third-party libraries; nil if something failed.
func checkBundle(c *checker, label string, data []byte, pinnedVkey string) *bundleSummary {
	failed := len(c.failures)
	var b bundleDoc
	if err := bundleDec.Unmarshal(data, &b); err != nil {
		c.fail("%s: fxamacker/cbor rejects the bundle: %v", label, err)
		return nil
	}
	// the container: our encoder claims RFC 8949 §4.2.1 key order; check the whole file
	if err := deterministic(data); err != nil {
		c.fail("%s: %v", label, err)
	}
	if b.Format != "fieldproof/bundle" || b.Version < 1 || b.Version > 3 ||
		(b.Version == 1 && b.Completeness != nil) || (b.Version < 3 && b.Seal != nil) {
		c.fail("%s: format %q version %d (completeness claim: %v)", label, b.Format, b.Version,
			b.Completeness != nil)
		return nil
	}
	if b.Log.Vkey != pinnedVkey {
		c.fail("%s: bundle names log key %q, the pinned one is %q", label, b.Log.Vkey, pinnedVkey)
	}
	verifier, err := note.NewVerifier(pinnedVkey)
	if !c.check(err, "%s: note.NewVerifier(pinned key)", label) {
		return nil
	}
	s := &bundleSummary{Origin: b.Log.Origin, Version: b.Version, Gateways: map[string]int{}}
	if b.Completeness != nil {
		if err := checkClaim(b.Completeness.Claim, b.Completeness.Note, b.Log.Origin, verifier); err != nil {
			c.fail("%s: completeness claim: %v", label, err)
		} else {
			s.Claim = true
		}
	}

	// checkpoints: signed by the pinned key, parsed by transparency-dev, growing
	roots := make([]tlog.Hash, 0, len(b.Checkpoints))
	for i, cp := range b.Checkpoints {
		parsed, _, _, err := log.ParseCheckpoint(cp.Note, b.Log.Origin, verifier)
		if !c.check(err, "%s: checkpoints[%d]: log.ParseCheckpoint", label, i) {
			return nil
		}
		if len(parsed.Hash) != 32 || (i > 0 && parsed.Size <= s.Sizes[i-1]) {
			c.fail("%s: checkpoints[%d]: size %d after %v / root of %d bytes", label, i, parsed.Size, s.Sizes, len(parsed.Hash))
			return nil
		}
		for j, a := range cp.Anchors {
			if a.Chain != "thor" && a.Chain != "evm" || !hex32.MatchString(a.Tx) || !hex32.MatchString(a.BlockID) ||
				(a.Chain == "thor" && (a.Genesis == nil || !hex32.MatchString(*a.Genesis) || a.ChainID != nil)) ||
				(a.Chain == "evm" && a.ChainID == nil) {
				c.fail("%s: checkpoints[%d] anchors[%d] is not an anchor of docs/bundle.md: %+v", label, i, j, a)
			}
		}
		var h tlog.Hash
		copy(h[:], parsed.Hash)
		roots = append(roots, h)
		s.Sizes = append(s.Sizes, parsed.Size)
		s.Roots = append(s.Roots, hex.EncodeToString(parsed.Hash))
		s.Anchors = append(s.Anchors, cp.Anchors)
	}

	// consistency proofs between successive checkpoints
	if len(b.Consistency) != max(0, len(b.Checkpoints)-1) {
		c.fail("%s: %d consistency proofs for %d checkpoints", label, len(b.Consistency), len(b.Checkpoints))
		return nil
	}
	for k, p := range b.Consistency {
		hs := make([]tlog.Hash, len(p))
		for i, h := range p {
			if len(h) != 32 {
				c.fail("%s: consistency[%d][%d] is %d bytes", label, k, i, len(h))
				return nil
			}
			copy(hs[i][:], h)
		}
		n1, n2 := int64(s.Sizes[k]), int64(s.Sizes[k+1])
		errT := safely(func() error { return tlog.CheckTree(hs, n2, roots[k+1], n1, roots[k]) })
		errM := safely(func() error {
			return proof.VerifyConsistency(rfc9162, uint64(n1), uint64(n2), p, roots[k][:], roots[k+1][:])
		})
		if errT != nil || errM != nil {
			c.fail("%s: consistency[%d] (%d -> %d): tlog.CheckTree: %v; proof.VerifyConsistency: %v", label, k, n1, n2, errT, errM)
			continue
		}
		s.Consistency++
	}

	// the subtree hash table
	table := map[[2]uint64]tlog.Hash{}
	for i, h := range b.Hashes {
		key := [2]uint64{h.Begin, h.End}
		if _, dup := table[key]; dup || h.Begin >= h.End || len(h.Hash) != 32 {
			c.fail("%s: hashes[%d] [%d, %d) is repeated, empty or not 32 bytes", label, i, h.Begin, h.End)
			return nil
		}
		var x tlog.Hash
		copy(x[:], h.Hash)
		table[key] = x
	}
	s.Hashes = len(table)

	prove := func(what string, e entryRow) {
		pos := sort.Search(len(s.Sizes), func(i int) bool { return s.Sizes[i] > e.Index })
		if pos == len(s.Sizes) {
			s.Unproven++
			return
		}
		size := s.Sizes[pos]
		var p []tlog.Hash
		for _, r := range inclusionRanges(e.Index, size) {
			h, ok := table[r]
			if !ok {
				c.fail("%s: %s at index %d: the hash of subtree [%d, %d) is missing", label, what, e.Index, r[0], r[1])
				return
			}
			p = append(p, h)
		}
		leaf := tlog.RecordHash(e.Data)
		raw := make([][]byte, len(p))
		for i := range p {
			raw[i] = p[i][:]
		}
		errT := safely(func() error { return tlog.CheckRecord(p, int64(size), roots[pos], int64(e.Index), leaf) })
		errM := safely(func() error {
			return proof.VerifyInclusion(rfc9162, e.Index, size, leaf[:], raw, roots[pos][:])
		})
		if errT != nil || errM != nil {
			c.fail("%s: %s at index %d in checkpoint size %d: tlog.CheckRecord: %v; proof.VerifyInclusion: %v",
				label, what, e.Index, size, errT, errM)
			return
		}
		s.Included++
	}

	// registry events: deterministic CBOR maps; key history per gateway
	keys := map[string][]keyEvent{}
	last := int64(-1)
	for _, e := range b.Registry {
		if int64(e.Index) <= last {
			c.fail("%s: registry index %d is not ascending", label, e.Index)
		}
		last = int64(e.Index)
		prove("registry event", e)
		s.Registry = append(s.Registry, e.Index)
		if err := deterministic(e.Data); err != nil {
			c.fail("%s: registry event %d: %v", label, e.Index, err)
			continue
		}
		var ev map[string]any
		if err := anyDec.Unmarshal(e.Data, &ev); err != nil {
			c.fail("%s: registry event %d: %v", label, e.Index, err)
			continue
		}
		gw, _ := ev["gw"].(string)
		kind, _ := ev["event"].(string)
		pk, _ := ev["pk"].([]byte)
		if ev["t"] != "fieldproof/registry/v1" || gw == "" {
			c.fail("%s: registry event %d is not a fieldproof/registry/v1 event: %v", label, e.Index, ev)
			continue
		}
		switch kind {
		case "enroll":
			if gatewayID(pk) != gw {
				c.fail("%s: registry event %d enrolls %s with a key whose id is %s", label, e.Index, gw, gatewayID(pk))
				continue
			}
			if req, ok := ev["request"].([]byte); ok {
				m, err := parseSign1(req)
				if err == nil {
					err = m.verify(pk)
				}
				if err != nil || m.Kid != gw {
					c.fail("%s: registry event %d: embedded enrollment request of %s: %v", label, e.Index, gw, err)
					continue
				}
			}
			keys[gw] = append(keys[gw], keyEvent{event: kind, pk: pk})
		case "rotate":
			from, _ := ev["from_seq"].(uint64)
			keys[gw] = append(keys[gw], keyEvent{event: kind, pk: pk, fromSeq: from})
		case "revoke":
			keys[gw] = append(keys[gw], keyEvent{event: kind})
		default:
			c.fail("%s: registry event %d has unknown event %q", label, e.Index, kind)
		}
	}

	// messages: proven, and signed by the gateway's key for that seq
	last = -1
	for _, e := range b.Messages {
		if int64(e.Index) <= last {
			c.fail("%s: message index %d is not ascending", label, e.Index)
		}
		last = int64(e.Index)
		prove("message", e)
		s.Messages = append(s.Messages, e.Index)
		m, err := parseSign1(e.Data)
		if err != nil {
			c.fail("%s: message %d: %v", label, e.Index, err)
			continue
		}
		p, err := decodePayload(m.Payload)
		if err != nil {
			c.fail("%s: message %d: %v", label, e.Index, err)
			continue
		}
		var pub []byte
		for _, k := range keys[m.Kid] {
			if k.event == "enroll" || (k.event == "rotate" && p.Seq >= k.fromSeq) {
				pub = k.pk
			}
		}
		if pub == nil {
			c.fail("%s: message %d: no enrolled key for %s", label, e.Index, m.Kid)
			continue
		}
		if _, _, err := checkMessage(e.Data, pub); err != nil {
			c.fail("%s: message %d of %s: %v", label, e.Index, m.Kid, err)
			continue
		}
		s.Gateways[m.Kid]++
	}
	if b.Seal != nil {
		s.SealFarms = checkSeal(c, label, b.Seal.Size, b.Seal.Entry, s.Sizes, roots, table, b.Seal.Farms)
	}
	if len(c.failures) > failed {
		return nil
	}
	return s
}

// checkSeal checks a version 3 seal with generic tools (docs/bundle.md §4b): the entry is the
// last leaf of the checkpoint of its size (tlog.CheckRecord, proof.VerifyInclusion), a
// deterministic-CBOR map of type fieldproof/seal/v1 at that index, and every farm record is a
// deterministic map of type fieldproof/seal-farm/v1 proven into the seal's root by
// transparency-dev/merkle. What the records say is the fieldproof verifier's business.
func checkSeal(c *checker, label string, size uint64, entry []byte, sizes []uint64, roots []tlog.Hash,
	table map[[2]uint64]tlog.Hash, farms []sealFarm) int {
	pos := sort.Search(len(sizes), func(i int) bool { return sizes[i] >= size })
	if size == 0 || pos == len(sizes) || sizes[pos] != size {
		c.fail("%s: the seal is for tree size %d, which no checkpoint of the bundle has", label, size)
		return 0
	}
	var p []tlog.Hash
	for _, r := range inclusionRanges(size-1, size) {
		h, ok := table[r]
		if !ok {
			c.fail("%s: seal: the hash of subtree [%d, %d) is missing", label, r[0], r[1])
			return 0
		}
		p = append(p, h)
	}
	raw := make([][]byte, len(p))
	for i := range p {
		raw[i] = p[i][:]
	}
	leaf := tlog.RecordHash(entry)
	errT := safely(func() error { return tlog.CheckRecord(p, int64(size), roots[pos], int64(size-1), leaf) })
	errM := safely(func() error { return proof.VerifyInclusion(rfc9162, size-1, size, leaf[:], raw, roots[pos][:]) })
	if errT != nil || errM != nil {
		c.fail("%s: seal at index %d: tlog.CheckRecord: %v; proof.VerifyInclusion: %v", label, size-1, errT, errM)
		return 0
	}
	var seal struct {
		T     string `cbor:"t"`
		Size  uint64 `cbor:"size"`
		Farms uint64 `cbor:"farms"`
		Root  []byte `cbor:"root"`
	}
	if err := deterministic(entry); err != nil {
		c.fail("%s: seal: %v", label, err)
		return 0
	}
	if err := bundleDec.Unmarshal(entry, &seal); err != nil || seal.T != "fieldproof/seal/v1" ||
		seal.Size != size-1 || len(seal.Root) != 32 {
		c.fail("%s: seal is not a fieldproof/seal/v1 map at index %d: %+v (%v)", label, size-1, seal, err)
		return 0
	}
	n := 0
	for _, f := range farms {
		position, record := f.Position, f.Record
		var rec struct {
			T        string `cbor:"t"`
			Farm     string `cbor:"farm"`
			Gateways []any  `cbor:"gateways"`
		}
		if err := deterministic(record); err != nil {
			c.fail("%s: seal farm record %d: %v", label, position, err)
			continue
		}
		if err := bundleDec.Unmarshal(record, &rec); err != nil || rec.T != "fieldproof/seal-farm/v1" {
			c.fail("%s: seal farm record %d is not a fieldproof/seal-farm/v1 map (%v)", label, position, err)
			continue
		}
		if err := safely(func() error {
			return proof.VerifyInclusion(rfc9162, position, seal.Farms, rfc9162.HashLeaf(record), f.Proof, seal.Root)
		}); err != nil {
			c.fail("%s: seal farm record %d (%s): proof.VerifyInclusion: %v", label, position, rec.Farm, err)
			continue
		}
		n++
	}
	return n
}

// checkBundleFile checks testdata/bundle/bundle.fpb and compares it with bundle.expected.json.
func checkBundleFile(c *checker, dir, vkey string) error {
	var exp struct {
		Origin      string `json:"origin"`
		Vkey        string `json:"vkey"`
		Checkpoints []struct {
			Size     uint64      `json:"size"`
			RootHash string      `json:"root_hash"`
			Anchors  []anchorRef `json:"anchors"`
		} `json:"checkpoints"`
		Hashes   []any `json:"hashes"`
		Registry []struct {
			Index uint64 `json:"index"`
		} `json:"registry"`
		Messages []struct {
			Index   uint64 `json:"index"`
			Gateway string `json:"gateway"`
		} `json:"messages"`
		Gateways     map[string]struct{ Messages int } `json:"gateways"`
		Verification struct {
			Consistency int `json:"consistency_valid"`
			Inclusion   int `json:"inclusion_valid"`
			Messages    int `json:"messages_verified"`
		} `json:"verification"`
	}
	if err := readJSON(filepath.Join(dir, "bundle.expected.json"), &exp); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "bundle.fpb"))
	if err != nil {
		return err
	}
	if exp.Vkey != vkey {
		c.fail("bundle.expected.json names log key %q, log/vkey.txt %q", exp.Vkey, vkey)
	}
	s := checkBundle(c, "bundle/bundle.fpb", data, vkey)
	if s == nil {
		return nil
	}
	msgs := 0
	for _, n := range s.Gateways {
		msgs += n
	}
	mismatch := s.Origin != exp.Origin || len(s.Sizes) != len(exp.Checkpoints) ||
		s.Consistency != exp.Verification.Consistency || s.Included != exp.Verification.Inclusion ||
		msgs != exp.Verification.Messages || len(s.Registry) != len(exp.Registry) ||
		len(s.Messages) != len(exp.Messages) || s.Hashes != len(exp.Hashes) || s.Unproven != 0 ||
		len(s.Gateways) != len(exp.Gateways)
	for i := 0; !mismatch && i < len(s.Sizes); i++ {
		want := exp.Checkpoints[i]
		mismatch = s.Sizes[i] != want.Size || s.Roots[i] != want.RootHash || !sameJSON(anchorsJSON(s.Anchors[i]), anchorsJSON(want.Anchors))
	}
	for i := 0; !mismatch && i < len(s.Messages); i++ {
		mismatch = s.Messages[i] != exp.Messages[i].Index
	}
	for gw, g := range exp.Gateways {
		mismatch = mismatch || s.Gateways[gw] != g.Messages
	}
	if mismatch {
		c.fail("bundle/bundle.fpb: decoded %+v; bundle.expected.json says otherwise", s)
		return nil
	}
	c.ok("bundle/bundle.fpb: %s", s)
	return nil
}

func anchorsJSON(a []anchorRef) []map[string]any {
	out := []map[string]any{}
	for _, x := range a {
		m := map[string]any{"chain": x.Chain, "tx": x.Tx, "block_number": x.BlockNumber,
			"block_id": x.BlockID, "block_time": x.BlockTime}
		if x.Genesis != nil {
			m["genesis"] = *x.Genesis
		}
		if x.ChainID != nil {
			m["chain_id"] = *x.ChainID
		}
		out = append(out, m)
	}
	return out
}
