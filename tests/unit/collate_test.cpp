#include "qtune/data/collate.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "test_util.h"

namespace {

using namespace qtune::data;
using qtune::test::error_of;

constexpr int64_t kPad = 0;

// Sample i, token k has id 1000 * (i + 1) + k, so every id names its sample and position. Even samples mask their
// first half (a prompt), odd ones train everything; lengths vary from 2 to 14.
std::vector<TokenizedSample> numbered_samples(int64_t n) {
  std::vector<TokenizedSample> out;
  for (int64_t i = 0; i < n; ++i) {
    TokenizedSample s;
    const int64_t len = 2 + (i * 7) % 13;
    for (int64_t k = 0; k < len; ++k) {
      s.input_ids.push_back(1000 * (i + 1) + k);
      s.labels.push_back(i % 2 == 0 && k < len / 2 ? kIgnoreLabel : s.input_ids.back());
    }
    out.push_back(std::move(s));
  }
  return out;
}

int64_t sample_of(int64_t id) { return id / 1000 - 1; }

std::vector<int64_t> as_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Everything a batch must satisfy, whatever the options; returns the targets it holds.
std::multiset<int64_t> check_batch(const Batch& b, const std::vector<TokenizedSample>& samples,
                                   const LoaderOptions& o) {
  std::multiset<int64_t> seen;
  const int64_t rows = b.input_ids.size(0), T = b.input_ids.size(1);
  EXPECT_LE(T, o.max_seq_len);
  EXPECT_LE(rows, o.batch_size);
  for (const auto& t : {b.targets, b.position_ids, b.segment_ids}) {
    EXPECT_EQ(t.sizes(), b.input_ids.sizes());
    EXPECT_EQ(t.scalar_type(), at::kLong);
  }
  const auto ids = as_vector(b.input_ids), targets = as_vector(b.targets), pos = as_vector(b.position_ids),
             seg = as_vector(b.segment_ids);
  int64_t samples_in_batch = 0, target_tokens = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t expected_segment = -1;
    bool in_padding = false;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t at = r * T + t;
      if (seg[at] == -1) {  // padding: only at the end of a row, never a target
        in_padding = true;
        EXPECT_EQ(ids[at], kPad);
        EXPECT_EQ(targets[at], kIgnoreLabel);
        continue;
      }
      EXPECT_FALSE(in_padding) << "a sample after padding";
      const int64_t i = sample_of(ids[at]), k = ids[at] % 1000;
      const auto& s = samples[i];
      if (k == 0) {
        EXPECT_EQ(seg[at], ++expected_segment) << "segments count 0, 1, 2.. along the row";
        ++samples_in_batch;
      } else {
        EXPECT_EQ(seg[at], expected_segment);
      }
      EXPECT_EQ(pos[at], k) << "positions restart at 0 in each packed sample";
      const bool last = k + 1 == static_cast<int64_t>(s.input_ids.size());
      const int64_t want = last ? kIgnoreLabel : s.labels[k + 1];
      EXPECT_EQ(targets[at], want) << "row " << r << " t " << t;
      if (targets[at] != kIgnoreLabel) {
        EXPECT_EQ(sample_of(targets[at]), i) << "a target never crosses into another sample";
        seen.insert(targets[at]);
        ++target_tokens;
      }
    }
  }
  EXPECT_EQ(b.samples, samples_in_batch);
  EXPECT_EQ(b.target_tokens, target_tokens);
  return seen;
}

std::multiset<int64_t> all_trained_labels(const std::vector<TokenizedSample>& samples) {
  std::multiset<int64_t> out;
  for (const auto& s : samples)
    for (size_t k = 1; k < s.labels.size(); ++k)
      if (s.labels[k] != kIgnoreLabel) out.insert(s.labels[k]);
  return out;
}

// The sample indices of an epoch in the order the batches hold them.
std::vector<int64_t> fed_order(const DataLoader& dl, int64_t epoch) {
  std::vector<int64_t> order;
  for (int64_t i = 0; i < dl.batches_per_epoch(epoch); ++i) {
    const auto b = dl.batch(epoch, i);
    const auto ids = as_vector(b.input_ids), pos = as_vector(b.position_ids), seg = as_vector(b.segment_ids);
    for (size_t j = 0; j < ids.size(); ++j)
      if (seg[j] != -1 && pos[j] == 0) order.push_back(sample_of(ids[j]));
  }
  return order;
}

TEST(Collate, EveryTrainedLabelIsATargetExactlyOncePerEpoch) {
  const auto samples = numbered_samples(37);
  const auto expected = all_trained_labels(samples);
  for (bool packing : {true, false}) {
    for (int64_t batch_size : {1, 3}) {
      LoaderOptions o;
      o.batch_size = batch_size;
      o.max_seq_len = 20;
      o.packing = packing;
      DataLoader dl(samples, o, kPad);
      EXPECT_EQ(dl.size(), samples.size());
      EXPECT_EQ(dl.total_target_tokens(), static_cast<int64_t>(expected.size()));
      for (int64_t epoch : {0, 1}) {
        SCOPED_TRACE("packing " + std::to_string(packing) + " batch " + std::to_string(batch_size) + " epoch " +
                     std::to_string(epoch));
        std::multiset<int64_t> seen;
        int64_t n_samples = 0, rows = 0;
        for (int64_t i = 0; i < dl.batches_per_epoch(epoch); ++i) {
          const auto b = dl.batch(epoch, i);
          const auto got = check_batch(b, samples, o);
          seen.insert(got.begin(), got.end());
          n_samples += b.samples;
          rows += b.input_ids.size(0);
          if (i + 1 < dl.batches_per_epoch(epoch)) {
            EXPECT_EQ(b.input_ids.size(0), batch_size) << "only the last batch is smaller";
          }
        }
        EXPECT_EQ(seen, expected);
        EXPECT_EQ(n_samples, 37);
        if (packing) {
          EXPECT_LT(rows, 37) << "packing puts several samples in a row";
        } else {
          EXPECT_EQ(rows, 37);
        }
      }
    }
  }
}

TEST(Collate, PacksGreedilyInOrder) {
  // Lengths 2, 9, 3, 10, 4 into rows of 12, in order: {0, 1} (11 tokens), {2} (3 + 10 > 12), {3} (10 + 4 > 12), {4}.
  // A first-fit packer would put sample 2 or 4 after sample 3's row; greedy-in-order does not look back.
  std::vector<TokenizedSample> samples;
  for (int64_t len : {2, 9, 3, 10, 4}) {
    TokenizedSample s;
    for (int64_t k = 0; k < len; ++k) {
      s.input_ids.push_back(1000 * (static_cast<int64_t>(samples.size()) + 1) + k);
      s.labels.push_back(s.input_ids.back());
    }
    samples.push_back(s);
  }
  LoaderOptions o;
  o.batch_size = 2;
  o.max_seq_len = 12;
  o.shuffle = false;
  DataLoader dl(samples, o, kPad);
  ASSERT_EQ(dl.batches_per_epoch(0), 2);  // 4 rows, 2 per batch
  auto b0 = dl.batch(0, 0);
  EXPECT_EQ(b0.input_ids.sizes(), (at::IntArrayRef{2, 11}));
  EXPECT_EQ(b0.samples, 3);
  EXPECT_EQ(as_vector(b0.segment_ids[0]), (std::vector<int64_t>{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(as_vector(b0.position_ids[0]), (std::vector<int64_t>{0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(as_vector(b0.segment_ids[1]), (std::vector<int64_t>{0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1}));
  EXPECT_EQ(as_vector(b0.position_ids[1]), (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(as_vector(b0.targets[0]).at(1), kIgnoreLabel) << "sample 0's last token does not predict sample 1";
  EXPECT_EQ(as_vector(b0.targets[0]).at(0), 1001);
  EXPECT_EQ(b0.target_tokens, 1 + 8 + 2);
  auto b1 = dl.batch(0, 1);
  EXPECT_EQ(b1.input_ids.sizes(), (at::IntArrayRef{2, 10}));
  EXPECT_EQ(fed_order(dl, 0), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  const auto msg = error_of([&] { dl.batch(0, 2); });
  EXPECT_NE(msg.find("batch 2 of epoch 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 batches"), std::string::npos) << msg;
}

TEST(Collate, OrderIsDeterministicBySeedAndEpoch) {
  const auto samples = numbered_samples(40);
  LoaderOptions o;
  o.batch_size = 2;
  o.max_seq_len = 24;
  DataLoader a(samples, o, kPad), b(samples, o, kPad);
  // Same seed: identical batches, whatever order they are asked for in (a resumed run asks from the middle).
  const auto late = b.batch(1, 3);
  for (int64_t i = 0; i < a.batches_per_epoch(1); ++i) {
    const auto x = a.batch(1, i), y = b.batch(1, i);
    EXPECT_TRUE(qtune::test::bitwise_equal(x.input_ids, y.input_ids));
    EXPECT_TRUE(qtune::test::bitwise_equal(x.targets, y.targets));
    EXPECT_TRUE(qtune::test::bitwise_equal(x.segment_ids, y.segment_ids));
    EXPECT_TRUE(qtune::test::bitwise_equal(x.position_ids, y.position_ids));
  }
  EXPECT_TRUE(qtune::test::bitwise_equal(late.input_ids, a.batch(1, 3).input_ids));

  const auto e0 = fed_order(a, 0), e1 = fed_order(a, 1);
  EXPECT_EQ(e0, a.epoch_order(0));
  EXPECT_NE(e0, e1) << "each epoch has its own order";
  auto sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 40; ++i) ASSERT_EQ(sorted[i], i) << "an epoch is a permutation";
  o.seed = 43;
  EXPECT_NE(fed_order(DataLoader(samples, o, kPad), 0), e0) << "another seed, another order";
  o.shuffle = false;
  std::vector<int64_t> identity(40);
  for (int64_t i = 0; i < 40; ++i) identity[i] = i;
  EXPECT_EQ(fed_order(DataLoader(samples, o, kPad), 1), identity);
  EXPECT_GT(a.total_batches(3), 0);
  EXPECT_EQ(a.total_batches(2), a.batches_per_epoch(0) + a.batches_per_epoch(1));
}

TEST(Collate, WithoutPackingOneSamplePerRowPaddedToTheLongest) {
  const auto samples = numbered_samples(10);
  LoaderOptions o;
  o.batch_size = 3;
  o.max_seq_len = 16;
  o.packing = false;
  o.shuffle = false;
  DataLoader dl(samples, o, /*pad_id=*/kPad);
  ASSERT_EQ(dl.batches_per_epoch(0), 4);
  for (int64_t i = 0; i < 4; ++i) {
    const auto b = dl.batch(0, i);
    const int64_t rows = i < 3 ? 3 : 1;
    int64_t longest = 0;
    for (int64_t r = 0; r < rows; ++r) longest = std::max<int64_t>(longest, samples[i * 3 + r].input_ids.size());
    EXPECT_EQ(b.input_ids.sizes(), (at::IntArrayRef{rows, longest}));
    EXPECT_EQ(b.samples, rows);
    EXPECT_EQ(b.segment_ids.max().item<int64_t>(), 0) << "one sample per row";
  }
}

TEST(Collate, RejectsSamplesItCannotBatch) {
  auto samples = numbered_samples(3);
  LoaderOptions o;
  o.max_seq_len = 5;
  auto msg = error_of([&] { DataLoader(samples, o, kPad); });
  EXPECT_NE(msg.find("more than max_seq_len 5"), std::string::npos) << msg;
  o.max_seq_len = 64;
  samples[1].labels.pop_back();
  msg = error_of([&] { DataLoader(samples, o, kPad); });
  EXPECT_NE(msg.find("sample 1"), std::string::npos) << msg;
  msg = error_of([&] { DataLoader({}, o, kPad); });
  EXPECT_NE(msg.find("no samples"), std::string::npos) << msg;
  o.batch_size = 0;
  msg = error_of([&] { DataLoader(numbered_samples(3), o, kPad); });
  EXPECT_NE(msg.find("batch_size"), std::string::npos) << msg;
}

TEST(Collate, SplitEvalIsDeterministicAndDisjoint) {
  const auto samples = numbered_samples(35);
  const auto [train, eval] = split_eval(samples, 0.1, 7);
  ASSERT_EQ(eval.size(), 4u) << "round(0.1 * 35)";
  ASSERT_EQ(train.size(), 31u);
  std::set<int64_t> train_ids, eval_ids;
  for (const auto& s : train) train_ids.insert(sample_of(s.input_ids[0]));
  for (const auto& s : eval) eval_ids.insert(sample_of(s.input_ids[0]));
  EXPECT_EQ(train_ids.size() + eval_ids.size(), 35u) << "disjoint, and together all samples";
  for (auto i : eval_ids) EXPECT_EQ(train_ids.count(i), 0u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end(),
                             [](const auto& x, const auto& y) { return x.input_ids[0] < y.input_ids[0]; }))
      << "the original order is kept";

  const auto [train2, eval2] = split_eval(samples, 0.1, 7);
  std::set<int64_t> eval2_ids;
  for (const auto& s : eval2) eval2_ids.insert(sample_of(s.input_ids[0]));
  EXPECT_EQ(eval2_ids, eval_ids) << "same seed, same split";
  bool any_differs = false;
  for (uint64_t seed = 8; seed < 12 && !any_differs; ++seed) {
    std::set<int64_t> other;
    for (const auto& s : split_eval(samples, 0.1, seed).second) other.insert(sample_of(s.input_ids[0]));
    any_differs = other != eval_ids;
  }
  EXPECT_TRUE(any_differs) << "the seed chooses the split";

  EXPECT_EQ(split_eval(numbered_samples(5), 0.01, 1).second.size(), 1u) << "at least one eval sample";
  EXPECT_EQ(split_eval(numbered_samples(5), 0.99, 1).first.size(), 1u) << "at least one training sample";
  for (double bad : {0.0, 1.0, -0.5, std::nan("")}) {
    const auto msg = error_of([&] { split_eval(samples, bad, 1); });
    EXPECT_NE(msg.find("eval_fraction"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([] { split_eval(numbered_samples(1), 0.5, 1); }).find("at least 2"), std::string::npos);
}

// The real pipeline end to end: dolly -> alpaca template -> stories260K ids -> packed batches.
TEST(Collate, DollyThroughTheWholePipeline) {
  QTUNE_REQUIRE_SHARED();
  const auto tok = Tokenizer::load(qtune::test::shared_dir() + "/models/stories260K");
  const auto records = read_records(qtune::test::shared_dir() + "/data/dolly_tiny_train.jsonl", DataFormat::AlpacaJsonl);
  const auto ds = tokenize_records(records, ChatTemplate::Alpaca, tok, false, 512);
  int64_t longer = 0;  // records that do not fit the model's 512-token context with alpaca's preamble
  for (const auto& r : records) longer += tokenize_record(r, ChatTemplate::Alpaca, tok, false, 4096).input_ids.size() > 512;
  EXPECT_GT(longer, 0) << "the longest dolly record (449 tokens of fields) plus the preamble exceeds 512";
  EXPECT_EQ(ds.truncated, longer);
  EXPECT_EQ(ds.dropped, 0);
  ASSERT_EQ(ds.samples.size(), 35u);
  for (const auto& s : ds.samples) EXPECT_LE(s.input_ids.size(), 512u);
  LoaderOptions o;
  o.batch_size = 2;
  o.max_seq_len = 512;
  DataLoader dl(ds.samples, o, tok.pad_id().value_or(tok.eos_id()));
  std::multiset<int64_t> seen;
  int64_t targets = 0, n = 0;
  for (int64_t i = 0; i < dl.batches_per_epoch(0); ++i) {
    const auto b = dl.batch(0, i);
    targets += b.target_tokens;
    n += b.samples;
    // Every EOS in the inputs is the end of a reply and is what the token before it was trained to predict.
    const auto ids = as_vector(b.input_ids), seg = as_vector(b.segment_ids), tg = as_vector(b.targets);
    for (size_t j = 1; j < ids.size(); ++j)
      if (seg[j] != -1 && ids[j] == tok.eos_id() && seg[j - 1] == seg[j]) {
        EXPECT_EQ(tg[j - 1], tok.eos_id());
      }
  }
  EXPECT_EQ(n, 35);
  EXPECT_EQ(targets, dl.total_target_tokens());
  EXPECT_LT(dl.batches_per_epoch(0), 35 / 2) << "packing 35 samples of ~200 tokens into 512-token rows";
}

}  // namespace
