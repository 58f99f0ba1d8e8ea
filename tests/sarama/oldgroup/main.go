// Command oldgroup drives ringlog with an old Sarama (Debian's
// golang-github-shopify-sarama-dev, 1.22) speaking old request versions.
//
// It creates a topic (ClusterAdmin), produces -count records round-robin over its
// partitions with a SyncProducer, consumes them in a consumer group, checks that
// every record arrives exactly once and in order within its partition, commits the
// offsets, reads the committed offsets and the log-end offsets back, describes and
// lists the group, and deletes the topic. It exits 0 and prints "OK ..." on
// success; on any failure it prints "FAIL: ..." to stderr and exits non-zero, and it
// never runs longer than -timeout.
//
// With -version 2.1.0 (the default) Sarama 1.22 sends: Metadata v5, CreateTopics v2,
// Produce v3 (record batches, message format 2), FindCoordinator v0, JoinGroup v1,
// SyncGroup v0, Heartbeat v0, OffsetFetch v1, ListOffsets v1, Fetch v4,
// OffsetCommit v1 (Sarama's default Consumer.Offsets.Retention 0; v2 with
// -retention > 0), LeaveGroup v0, DescribeGroups v0, ListGroups v0, DeleteTopics v1. It sends no
// ApiVersions request.
//
// Built in GOPATH mode, offline, against Debian's Go sources:
//
//	apt-get install -y golang-go golang-github-shopify-sarama-dev   # gcc too (cgo zstd)
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
//	    CGO_CFLAGS="-g -O2 -Wno-deprecated-declarations" go build -o oldgroup ./tests/sarama/oldgroup
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// handler checks each partition's records against what was produced.
type handler struct {
	topic    string
	want     map[int32][]string // partition -> value at each offset
	total    int
	done     context.CancelFunc
	mu       sync.Mutex
	next     map[int32]int64 // partition -> next expected offset
	received int
	problem  string
	claims   map[int32]bool
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range s.Claims()[h.topic] {
		h.claims[p] = true
	}
	fmt.Fprintf(os.Stderr, "oldgroup: session member=%s generation=%d claims=%v\n",
		s.MemberID(), s.GenerationID(), s.Claims())
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for msg := range c.Messages() {
		h.mu.Lock()
		p := msg.Partition
		exp := h.next[p]
		switch {
		case msg.Topic != h.topic:
			h.problem = fmt.Sprintf("record from unexpected topic %q", msg.Topic)
		case msg.Offset < exp:
			h.problem = fmt.Sprintf("partition %d: offset %d delivered again (next expected %d)", p, msg.Offset, exp)
		case msg.Offset > exp:
			h.problem = fmt.Sprintf("partition %d: offsets %d..%d skipped", p, exp, msg.Offset-1)
		case msg.Offset >= int64(len(h.want[p])):
			h.problem = fmt.Sprintf("partition %d: unexpected record at offset %d (only %d produced)", p, msg.Offset, len(h.want[p]))
		case string(msg.Value) != h.want[p][msg.Offset]:
			h.problem = fmt.Sprintf("partition %d offset %d: value %q, produced %q", p, msg.Offset, msg.Value, h.want[p][msg.Offset])
		}
		if h.problem != "" {
			h.mu.Unlock()
			h.done()
			return nil
		}
		h.next[p] = msg.Offset + 1
		h.received++
		s.MarkMessage(msg, "")
		finished := h.received == h.total
		h.mu.Unlock()
		if finished {
			h.done()
		}
	}
	return nil
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic := flag.String("topic", "sarama-old", "topic to create, produce to and consume")
	group := flag.String("group", "sarama-old-group", "consumer group id")
	count := flag.Int("count", 300, "records to produce and consume")
	partitions := flag.Int("partitions", 3, "partitions of the created topic")
	version := flag.String("version", "2.1.0", "Kafka version Sarama assumes (picks the request versions)")
	retention := flag.Duration("retention", 0, "Consumer.Offsets.Retention: 0 commits with OffsetCommit v1, >0 with v2")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	verbose := flag.Bool("verbose", false, "print Sarama's own log")
	flag.Parse()

	start := time.Now()
	deadline := time.AfterFunc(*timeout, func() {
		fmt.Fprintf(os.Stderr, "FAIL: timed out after %v\n", *timeout)
		os.Exit(3)
	})
	defer deadline.Stop()
	if *verbose {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}

	kv, err := sarama.ParseKafkaVersion(*version)
	if err != nil {
		fail("bad -version: %v", err)
	}
	conf := sarama.NewConfig()
	conf.Version = kv
	conf.ClientID = "ringlog-oldgroup"
	conf.Metadata.Retry.Max = 5
	conf.Metadata.Retry.Backoff = 200 * time.Millisecond
	conf.Admin.Timeout = 10 * time.Second
	conf.Net.DialTimeout = 5 * time.Second
	conf.Net.ReadTimeout = 15 * time.Second
	conf.Net.WriteTimeout = 5 * time.Second
	addrs := []string{*bootstrap}
	step := func(s string) { fmt.Fprintf(os.Stderr, "oldgroup: %6.2fs %s\n", time.Since(start).Seconds(), s) }

	// 1. Create the topic.
	step("create topic")
	admin, err := sarama.NewClusterAdmin(addrs, conf)
	if err != nil {
		fail("NewClusterAdmin: %v", err)
	}
	err = admin.CreateTopic(*topic, &sarama.TopicDetail{NumPartitions: int32(*partitions), ReplicationFactor: 1}, false)
	if te, ok := err.(*sarama.TopicError); ok && te.Err == sarama.ErrTopicAlreadyExists {
		err = nil
	}
	if err != nil {
		fail("CreateTopic %s: %v", *topic, err)
	}
	if err := admin.Close(); err != nil {
		fail("closing the admin client: %v", err)
	}

	// 2. Produce, each record to an explicit partition.
	step("produce")
	pconf := *conf
	pconf.Producer.Return.Successes = true
	pconf.Producer.RequiredAcks = sarama.WaitForAll
	pconf.Producer.Partitioner = sarama.NewManualPartitioner
	pconf.Producer.Retry.Max = 5
	producer, err := sarama.NewSyncProducer(addrs, &pconf)
	if err != nil {
		fail("NewSyncProducer: %v", err)
	}
	want := map[int32][]string{}
	for i := 0; i < *count; i++ {
		p := int32(i % *partitions)
		value := fmt.Sprintf("value-%d", i)
		gotP, off, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: *topic, Partition: p,
			Key:   sarama.StringEncoder(fmt.Sprintf("key-%d", i)),
			Value: sarama.StringEncoder(value),
		})
		if err != nil {
			fail("SendMessage %d: %v", i, err)
		}
		if gotP != p || off != int64(len(want[p])) {
			fail("record %d stored at partition %d offset %d, expected partition %d offset %d", i, gotP, off, p, len(want[p]))
		}
		want[p] = append(want[p], value)
	}
	if err := producer.Close(); err != nil {
		fail("closing the producer: %v", err)
	}

	// 3. Consume in a consumer group, then commit (on session release).
	step("consume in group " + *group)
	gconf := *conf
	gconf.Consumer.Offsets.Initial = sarama.OffsetOldest
	gconf.Consumer.Offsets.Retention = *retention
	gconf.Consumer.Offsets.CommitInterval = 500 * time.Millisecond
	gconf.Consumer.Return.Errors = true
	gconf.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRange
	gconf.Consumer.Group.Session.Timeout = 10 * time.Second
	gconf.Consumer.Group.Heartbeat.Interval = 1 * time.Second
	gconf.Consumer.Group.Rebalance.Timeout = 20 * time.Second
	cg, err := sarama.NewConsumerGroup(addrs, *group, &gconf)
	if err != nil {
		fail("NewConsumerGroup: %v", err)
	}
	var groupErrs []string
	var errMu sync.Mutex
	go func() {
		for e := range cg.Errors() {
			errMu.Lock()
			groupErrs = append(groupErrs, e.Error())
			errMu.Unlock()
			fmt.Fprintf(os.Stderr, "oldgroup: consumer group error: %v\n", e)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	h := &handler{topic: *topic, want: want, total: *count, done: cancel,
		next: map[int32]int64{}, claims: map[int32]bool{}}
	var consumeErrs []string
	for attempts := 0; ctx.Err() == nil; attempts++ {
		if err := cg.Consume(ctx, []string{*topic}, h); err != nil {
			consumeErrs = append(consumeErrs, err.Error())
			fmt.Fprintf(os.Stderr, "oldgroup: Consume: %v\n", err)
			if attempts >= 5 {
				fail("Consume failed %d times: %s", attempts+1, strings.Join(consumeErrs, "; "))
			}
			time.Sleep(time.Second)
		}
	}
	if err := cg.Close(); err != nil {
		fail("closing the consumer group: %v", err)
	}
	h.mu.Lock()
	if h.problem != "" {
		fail("%s", h.problem)
	}
	if h.received != *count {
		fail("consumed %d of %d records", h.received, *count)
	}
	if len(h.claims) != *partitions {
		fail("the member was assigned partitions %v, expected all %d", h.claims, *partitions)
	}
	h.mu.Unlock()
	errMu.Lock()
	if len(groupErrs) > 0 {
		fail("consumer group reported errors: %s", strings.Join(groupErrs, "; "))
	}
	errMu.Unlock()

	// 4. Read back the committed offsets, the log-end offsets, the group.
	step("check committed offsets")
	client, err := sarama.NewClient(addrs, conf)
	if err != nil {
		fail("NewClient: %v", err)
	}
	admin, err = sarama.NewClusterAdmin(addrs, conf)
	if err != nil {
		fail("NewClusterAdmin: %v", err)
	}
	var ps []int32
	for p := 0; p < *partitions; p++ {
		ps = append(ps, int32(p))
	}
	committed, err := admin.ListConsumerGroupOffsets(*group, map[string][]int32{*topic: ps})
	if err != nil {
		fail("ListConsumerGroupOffsets: %v", err)
	}
	if committed.Err != sarama.ErrNoError {
		fail("ListConsumerGroupOffsets: %v", committed.Err)
	}
	for _, p := range ps {
		n := int64(len(want[p]))
		b := committed.GetBlock(*topic, p)
		if b == nil {
			fail("no committed offset returned for partition %d", p)
		}
		if b.Err != sarama.ErrNoError || b.Offset != n {
			fail("partition %d: committed offset %d (%v), expected %d", p, b.Offset, b.Err, n)
		}
		newest, err := client.GetOffset(*topic, p, sarama.OffsetNewest)
		if err != nil || newest != n {
			fail("partition %d: log-end offset %d (%v), expected %d", p, newest, err, n)
		}
		oldest, err := client.GetOffset(*topic, p, sarama.OffsetOldest)
		if err != nil || oldest != 0 {
			fail("partition %d: log-start offset %d (%v), expected 0", p, oldest, err)
		}
	}
	step("describe and list groups")
	groups, err := admin.DescribeConsumerGroups([]string{*group})
	if err != nil {
		fail("DescribeConsumerGroups: %v", err)
	}
	if len(groups) != 1 || groups[0].Err != sarama.ErrNoError || groups[0].GroupId != *group ||
		groups[0].State != "Empty" || len(groups[0].Members) != 0 {
		fail("DescribeConsumerGroups after the member left: %+v", groups)
	}
	listed, err := admin.ListConsumerGroups()
	if err != nil {
		fail("ListConsumerGroups: %v", err)
	}
	if listed[*group] != "consumer" {
		fail("ListConsumerGroups: %v has no consumer group %q", listed, *group)
	}

	// 5. Delete the topic.
	step("delete topic")
	if err := admin.DeleteTopic(*topic); err != nil {
		fail("DeleteTopic %s: %v", *topic, err)
	}
	if err := admin.Close(); err != nil {
		fail("closing the admin client: %v", err)
	}
	if err := client.Close(); err != nil {
		fail("closing the client: %v", err)
	}
	fmt.Printf("OK oldgroup: version %s, %d records over %d partitions produced, consumed once in order by group %s, offsets committed, topic deleted, in %.1fs\n",
		kv, *count, *partitions, *group, time.Since(start).Seconds())
}
