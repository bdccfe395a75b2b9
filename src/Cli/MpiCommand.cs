using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using UioLlm.Kernels;
using UioLlm.Kernels.Distributed;
using UioLlm.Model;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Distributed;
using UioLlm.Training.Estimators;

namespace UioLlm.Cli;

/// <summary>
/// `uio mpi check|bench`, meant to run under `mpirun -np N` (without a launcher it runs as a group of one):
/// <list type="bullet">
/// <item>check: the group (ranks, hosts, library), an all-reduce, the bucketed gradient reduction and ring
/// attention forward and backward against single-process attention over the whole sequence; exit 1 on a mismatch.</item>
/// <item>bench: all-reduce bandwidth, and the data-parallel UIO training step on the stories15M shape (a global
/// batch of documents dealt over the ranks, then the gradient all-reduce).</item>
/// </list>
/// Rank 0 prints and writes --json; a failure on any rank ends every rank.
/// </summary>
internal static class MpiCommand
{
    /// <summary>What `uio mpi perplexity` reads: the model, the text and how many of its tokens.</summary>
    public sealed record PerplexityOptions(string? Model, string? Tokenizer, string? Data, int Tokens);

    public static int Run(string action, int threads, int documents, string? json, bool quick, PerplexityOptions perplexity, TextWriter output, TextWriter error)
    {
        if (action is not ("check" or "bench" or "perplexity"))
        {
            error.WriteLine($"uio mpi: ACTION must be check, bench or perplexity, got '{action}'");
            return 2;
        }
        if (threads < 0 || documents <= 0)
        {
            error.WriteLine(threads < 0 ? $"uio mpi: --threads must be 0 (all cores) or a positive number, got {threads}"
                                        : $"uio mpi: --documents must be positive, got {documents}");
            return 2;
        }
        MpiCommunicator? mpi = null;
        if (MpiCommunicator.LaunchedByMpi)
        {
            try
            {
                mpi = MpiCommunicator.InitWorld();
            }
            catch (MpiUnavailableException e)
            {
                error.WriteLine($"uio mpi: started by an MPI launcher, but {e.Message}");
                return 2;
            }
        }
        ICommunicator group = mpi is not null ? mpi : SingleProcessCommunicator.Instance;
        var say = group.Rank == 0 ? output : TextWriter.Null;
        int code = CliSupport.Guarded(group.Size > 1 ? $"mpi [rank {group.Rank}]" : "mpi", error, () =>
        {
            var results = new Dictionary<string, object>
            {
                ["ranks"] = group.Size,
                ["library"] = mpi?.LibraryVersion ?? "none (single process)",
            };
            int result;
            if (action == "perplexity")
            {
                result = Perplexity(group, perplexity, threads, say, results);
            }
            else
            {
                using var acc = Accelerator.Create(AcceleratorKind.Cpu, threads);
                int threadCount = ((UioLlm.Kernels.Cpu.CpuAccelerator)acc).Threads;
                results["threads_per_rank"] = threadCount;
                say.WriteLine($"uio mpi {action}: {group.Description}; {acc.Description} per rank");
                if (mpi is not null)
                {
                    var hosts = Gather(group, mpi.Host);
                    say.WriteLine($"hosts: {string.Join(", ", hosts.Select((h, r) => $"rank {r} on {h}"))}");
                }
                result = action == "check" ? Check(group, acc, say, results) : Bench(group, acc, threadCount, documents, quick, say, results);
            }
            if (json is not null && group.Rank == 0)
                File.WriteAllText(json, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }));
            return result;
        });
        if (mpi is not null)
        {
            if (code == 2 && mpi.Size > 1) mpi.Abort(code);
            mpi.Dispose();
        }
        return code;
    }

    // ------------------------------------------------------------------ check

    private static int Check(ICommunicator group, Accelerator acc, TextWriter say, Dictionary<string, object> results)
    {
        int n = group.Size, r = group.Rank;
        bool ok = true;

        // All-reduce: rank r contributes r + 1 + i at element i.
        var values = Enumerable.Range(0, 1000).Select(i => (float)(r + 1 + i)).ToArray();
        group.AllReduceSum(values);
        bool sumOk = values.Select((v, i) => v == n * (n + 1) / 2f + n * i).All(b => b);
        ok &= Agree(group, sumOk);
        say.WriteLine($"all-reduce of 1000 floats: {(sumOk ? "exact" : "WRONG")}");
        results["allreduce_exact"] = sumOk;

        // Gradient reduction in buckets of 7 floats (tensors split across buckets): every rank can compute the sum.
        int[][] shapes = [[3, 5], [1], [20], [2, 2, 2]];
        var grads = shapes.Select((s, t) => acc.FromArray(Fill(s.Aggregate(1, (a, b) => a * b), seed: 100 * r + t), s)).ToList();
        var reducer = new DataParallelReducer(group, deterministic: false, bucketElements: 7);
        var totals = reducer.Reduce(grads, new StepTotals(r + 0.5, r + 1, 10 * (r + 1)), documents: n);
        double gradError = 0;
        for (int t = 0; t < shapes.Length; t++)
        {
            var expected = new double[grads[t].Length];
            for (int rank = 0; rank < n; rank++)
            {
                var part = Fill(expected.Length, seed: 100 * rank + t);
                for (int i = 0; i < expected.Length; i++) expected[i] += part[i];
            }
            var got = grads[t].ToArray();
            for (int i = 0; i < got.Length; i++) gradError = Math.Max(gradError, Math.Abs(got[i] - expected[i]));
        }
        foreach (var g in grads) g.Dispose();
        bool totalsOk = totals.Segments == n * (n + 1) / 2 && totals.Tokens == 10 * n * (n + 1) / 2
                        && Math.Abs(totals.LossSum - (n * (n - 1) / 2.0 + 0.5 * n)) < 1e-12;
        bool reduceOk = gradError < 1e-5 && totalsOk;
        ok &= Agree(group, reduceOk);
        say.WriteLine($"bucketed gradient all-reduce (buckets of 7 floats, {reducer.AllReduceCalls} all-reduces): max error {gradError:E2}, totals {(totalsOk ? "exact" : "WRONG")}");
        results["reduce_max_error"] = gradError;

        // Ring attention against single-process attention over the whole sequence.
        var cases = new (string Name, bool Causal, int T, int Hq, int Hkv, int D)[]
        {
            ("causal, Hq=4, Hkv=2, D=16", true, 7, 4, 2, 16),
            ("full, Hq=2, Hkv=2, D=8", false, 5, 2, 2, 8),
            ("causal, Hq=2, Hkv=1, D=32", true, 16, 2, 1, 32),
        };
        var ring = new List<object>();
        foreach (var c in cases)
        {
            var errors = RingVersusFull(group, acc, c.Causal, c.T, c.Hq, c.Hkv, c.D);
            double worst = errors.Max();
            var all = new double[errors.Length * n];
            group.AllGather(errors, all);
            worst = all.Max();
            bool pass = worst < 2e-5;
            ok &= pass;
            say.WriteLine($"ring attention, {c.Name}, {n} x {c.T} positions: max |error| o {all.Where((_, i) => i % 5 == 0).Max():E2}, lse {all.Where((_, i) => i % 5 == 1).Max():E2}, "
                          + $"dq {all.Where((_, i) => i % 5 == 2).Max():E2}, dk {all.Where((_, i) => i % 5 == 3).Max():E2}, dv {all.Where((_, i) => i % 5 == 4).Max():E2} {(pass ? "ok" : "MISMATCH")}");
            ring.Add(new { name = c.Name, positions_per_rank = c.T, max_error = worst, pass });
        }
        results["ring_attention"] = ring;

        // The sequence-parallel full-attention model: each rank's block of logits against one process's forward.
        {
            var config = new LlamaConfig { Dim = 64, HiddenDim = 96, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 97, MaxSeqLen = 1024 };
            const int t = 12;
            using var weights = LlamaWeights.Random(acc, config, seed: 3, scale: 0.2f);
            var model = new LlamaModel(weights);
            var ids = Enumerable.Range(0, n * t).Select(i => (i * 37 + 11) % config.VocabSize).ToArray();
            using var tape = new UioLlm.Model.Autograd.Tape(acc);
            var full = model.Forward(tape, ids).Value.ToArray();
            using var mine = SequenceParallel.Logits(model, group, ids.AsSpan(r * t, t));
            double worst = MaxError(mine.ToArray(), full.AsSpan(r * t * config.VocabSize, t * config.VocabSize).ToArray(), 0f);
            var all = new double[n];
            group.AllGather([worst], all);
            worst = all.Max();
            bool pass = worst < 1e-4;
            ok &= pass;
            say.WriteLine($"sequence-parallel model (dim 64, 2 layers, ring attention), {n} x {t} tokens: max |logit error| {worst:E2} {(pass ? "ok" : "MISMATCH")}");
            results["sequence_parallel_max_error"] = worst;
        }
        results["ok"] = ok;
        say.WriteLine(ok ? "all checks passed" : "SOME CHECKS FAILED");
        return ok ? 0 : 1;
    }

    /// <summary>Max |ring - full| of o, lse, dq, dk, dv on this rank's block.</summary>
    private static double[] RingVersusFull(ICommunicator group, Accelerator acc, bool causal, int t, int hq, int hkv, int d)
    {
        int n = group.Size, r = group.Rank, total = n * t;
        // Every rank makes the same whole sequence and takes its block.
        using var q = acc.FromArray(Fill(total * hq * d, 1), [total, hq, d]);
        using var k = acc.FromArray(Fill(total * hkv * d, 2), [total, hkv, d]);
        using var v = acc.FromArray(Fill(total * hkv * d, 3), [total, hkv, d]);
        using var dO = acc.FromArray(Fill(total * hq * d, 4), [total, hq, d]);
        using var o = acc.Allocate(total, hq, d);
        using var lse = acc.Allocate(hq, total);
        using var dq = acc.Allocate(total, hq, d);
        using var dk = acc.Allocate(total, hkv, d);
        using var dv = acc.Allocate(total, hkv, d);
        foreach (var g in new[] { dq, dk, dv }) acc.Kernels.Fill(g, 0f);
        var mask = causal ? AttentionMask.CausalMask() : AttentionMask.None;
        acc.Kernels.Attention(q, k, v, o, lse, mask);
        acc.Kernels.AttentionBackward(q, k, v, o, dO, lse, mask, dq, dk, dv);

        using var qb = Block(acc, q, r, t);
        using var kb = Block(acc, k, r, t);
        using var vb = Block(acc, v, r, t);
        using var dOb = Block(acc, dO, r, t);
        using var ob = acc.Allocate(t, hq, d);
        using var lb = acc.Allocate(hq, t);
        // Gradients accumulate: start them at 1 and subtract it again.
        using var dqb = acc.Allocate(t, hq, d);
        using var dkb = acc.Allocate(t, hkv, d);
        using var dvb = acc.Allocate(t, hkv, d);
        foreach (var g in new[] { dqb, dkb, dvb }) acc.Kernels.Fill(g, 1f);
        RingAttention.Forward(group, qb, kb, vb, ob, lb, causal);
        RingAttention.Backward(group, qb, kb, vb, ob, dOb, lb, causal, dqb, dkb, dvb);

        var lseFull = lse.ToArray();
        var lseBlock = new float[hq * t];
        for (int h = 0; h < hq; h++) Array.Copy(lseFull, h * total + r * t, lseBlock, h * t, t);
        return
        [
            MaxError(ob.ToArray(), Rows(o, r, t), 0f),
            MaxError(lb.ToArray(), lseBlock, 0f),
            MaxError(dqb.ToArray(), Rows(dq, r, t), 1f),
            MaxError(dkb.ToArray(), Rows(dk, r, t), 1f),
            MaxError(dvb.ToArray(), Rows(dv, r, t), 1f),
        ];
    }

    private static Tensor Block(Accelerator acc, Tensor whole, int rank, int t)
    {
        var shape = whole.Shape.ToArray();
        shape[0] = t;
        return acc.FromArray(Rows(whole, rank, t), shape);
    }

    private static float[] Rows(Tensor whole, int rank, int t) => whole.Slice(rank * t, t).ToArray();

    private static double MaxError(float[] got, float[] expected, float offset)
    {
        double worst = 0;
        for (int i = 0; i < got.Length; i++) worst = Math.Max(worst, Math.Abs(got[i] - offset - expected[i]));
        return worst;
    }

    private static float[] Fill(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>True on every rank only when it is true on every rank.</summary>
    private static bool Agree(ICommunicator group, bool mine)
    {
        Span<double> failures = [mine ? 0 : 1];
        group.AllReduceSum(failures);
        return failures[0] == 0;
    }

    private static string[] Gather(ICommunicator group, string text)
    {
        const int width = 64;
        var mine = new double[width];
        for (int i = 0; i < Math.Min(width, text.Length); i++) mine[i] = text[i];
        var all = new double[width * group.Size];
        group.AllGather(mine, all);
        return Enumerable.Range(0, group.Size)
            .Select(r => new string(all.Skip(r * width).Take(width).TakeWhile(c => c != 0).Select(c => (char)c).ToArray())).ToArray();
    }

    // ------------------------------------------------------------------ perplexity

    /// <summary>
    /// Perplexity of the first --tokens tokens of a text under the model with full attention over all of them,
    /// the sequence split evenly over the ranks (<see cref="SequenceParallel"/>: ring attention in every layer).
    /// </summary>
    private static int Perplexity(ICommunicator group, PerplexityOptions p, int threads, TextWriter say, Dictionary<string, object> results)
    {
        if (p.Model is null) throw new UsageException("mpi perplexity: --model is required");
        if (p.Data is null) throw new UsageException("mpi perplexity: --data is required (a text file)");
        CliSupport.RequireExists(p.Data, "--data");
        if (p.Tokens < 2 * group.Size || p.Tokens % group.Size != 0)
            throw new UsageException($"--tokens must be a multiple of the {group.Size} rank(s) and at least {2 * group.Size}, got {p.Tokens}");
        using var loaded = CliSupport.Open(p.Model, p.Tokenizer, threads);
        say.WriteLine($"uio mpi perplexity: {group.Description}; {loaded.Accelerator.Description} per rank");
        var ids = loaded.Tokenizer.Encode(File.ReadAllText(p.Data), addBos: true);
        if (ids.Length < p.Tokens)
            throw new UsageException($"--data: '{p.Data}' holds {ids.Length} tokens, fewer than --tokens {p.Tokens}");
        int t = p.Tokens / group.Size, r = group.Rank, vocab = loaded.Model.Config.VocabSize;
        var clock = Stopwatch.StartNew();
        using var logits = SequenceParallel.Logits(loaded.Model, group, ids.AsSpan(r * t, t));
        var rows = logits.ToArray();
        // Negative log-likelihood of each next token that lies inside the --tokens (the last one has none).
        Span<double> sums = [0, 0];
        for (int i = 0; i < t && r * t + i + 1 < p.Tokens; i++)
        {
            var row = rows.AsSpan(i * vocab, vocab);
            double max = double.NegativeInfinity, sum = 0;
            foreach (float x in row) max = Math.Max(max, x);
            foreach (float x in row) sum += Math.Exp(x - max);
            sums[0] += max + Math.Log(sum) - row[ids[r * t + i + 1]];
            sums[1] += 1;
        }
        group.AllReduceSum(sums);
        double perplexity = Math.Exp(sums[0] / sums[1]), seconds = clock.Elapsed.TotalSeconds;
        say.WriteLine($"perplexity of the first {p.Tokens} tokens of {Path.GetFileName(p.Data)}, full attention over all of them, "
                      + $"{group.Size} rank(s) x {t} tokens (ring attention in every layer): {perplexity.ToString("F4", CultureInfo.InvariantCulture)} ({seconds:F2} s)");
        results["tokens"] = p.Tokens;
        results["perplexity"] = perplexity;
        results["seconds"] = seconds;
        return 0;
    }

    // ------------------------------------------------------------------ bench

    private static int Bench(ICommunicator group, Accelerator acc, int threads, int documents, bool quick, TextWriter say, Dictionary<string, object> results)
    {
        // All-reduce bandwidth: median of repetitions; bus bandwidth = bytes * 2 (N-1) / N / time (what a ring moves).
        int n = group.Size;
        var sizes = quick ? new[] { 1 << 16 } : new[] { 1 << 18, 1 << 20, 1 << 22, 1 << 24 };
        var bandwidth = new List<object>();
        foreach (int floats in n > 1 ? sizes : [])
        {
            var buffer = new float[floats];
            var times = new List<double>();
            for (int rep = 0; rep < (quick ? 3 : 7); rep++)
            {
                group.Barrier();
                var clock = Stopwatch.StartNew();
                group.AllReduceSum(buffer);
                times.Add(clock.Elapsed.TotalSeconds);
            }
            double median = Median(times), bytes = 4.0 * floats;
            double bus = n > 1 ? bytes * 2 * (n - 1) / n / median / 1e9 : double.NaN;
            say.WriteLine($"all-reduce {bytes / 1e6,7:F1} MB: {median * 1e3,8:F2} ms, algorithm bandwidth {bytes / median / 1e9,6:F2} GB/s, bus bandwidth {(n > 1 ? bus.ToString("F2", CultureInfo.InvariantCulture) : "-")} GB/s");
            bandwidth.Add(new { megabytes = bytes / 1e6, milliseconds = median * 1e3, algorithm_gb_s = bytes / median / 1e9, bus_gb_s = n > 1 ? bus : 0 });
        }
        results["allreduce"] = bandwidth;

        // The data-parallel UIO step: stories15M shape, random weights, l = 256 (quick: 64), n = l/8, LoRA r = 16,
        // UnbiasedIncremental(S = 2), documents of 4 segments; the global batch is dealt over the ranks.
        int l = quick ? 64 : 256, segments = 4, repeats = quick ? 1 : 5;
        var shape = LlamaConfig.Stories15MShape with { MaxSeqLen = 4096 };
        using var weights = LlamaWeights.Random(acc, shape, seed: 1);
        using var uio = new UioModel(new LlamaModel(weights),
            new UioConfig { SegmentLength = l, MemoryTokens = l / 8, EncoderRank = 16, EncoderAlpha = 32, TransferRank = 16, TransferAlpha = 32 }, seed: 1);
        var parameters = uio.TrainableParameters().ToArray();
        var reducer = new DataParallelReducer(group);
        var rng = new Random(2);
        var docs = Enumerable.Range(0, documents)
            .Select(_ => Enumerable.Range(0, segments * l + 1).Select(_ => rng.Next(shape.VocabSize)).ToArray()).ToArray();
        long gradientFloats = parameters.Sum(p => (long)p.Value.Length);
        var steps = new List<double>();
        var reduces = new List<double>();
        var computes = new List<double>();
        for (int rep = 0; rep <= repeats; rep++)
        {
            foreach (var p in parameters) p.ZeroGrad();
            var grads = parameters.Select(p => p.Grad!).ToArray();
            group.Barrier();
            var clock = Stopwatch.StartNew();
            StepTotals local = default;
            for (int d = 0; d < documents; d++)
            {
                if (!reducer.Computes(d)) continue;
                var result = new UnbiasedIncremental(2, seed: d).Accumulate(uio, docs[d]);
                local = new StepTotals(local.LossSum + result.Loss, local.Segments + result.Segments, local.Tokens + result.Tokens);
            }
            double compute = clock.Elapsed.TotalSeconds;
            reducer.Reduce(grads, local, documents);
            double step = clock.Elapsed.TotalSeconds;
            // The step takes as long as its slowest rank; compute is each rank's own documents.
            Span<double> times = [step, compute];
            var all = new double[2 * n];
            group.AllGather(times, all);
            if (rep == 0) continue;   // warm-up
            steps.Add(Enumerable.Range(0, n).Max(i => all[2 * i]));
            computes.Add(Enumerable.Range(0, n).Max(i => all[2 * i + 1]));
        }
        // The gradient all-reduce alone (all ranks arrive together): what the step pays for communication.
                for (int rep = 0; rep < 7; rep++)
        {
            group.Barrier();
            var clock = Stopwatch.StartNew();
            reducer.Reduce([.. parameters.Select(p => p.Grad!)], default, documents);
            reduces.Add(clock.Elapsed.TotalSeconds);
        }
        double best = steps.Min(), median2 = Median(steps);
        int tokens = documents * segments * l;
        say.WriteLine($"UIO step, stories15M shape, l = {l}, {documents} documents x {segments} segments per step over {n} rank(s) x {threads} thread(s): "
                      + $"best {best:F3} s, median {median2:F3} s ({tokens / best:F0} tokens/s), of which the slowest rank's documents {Median(computes):F3} s (median); "
                      + $"gradient reduction alone {Median(reduces) * 1e3:F2} ms for {gradientFloats:N0} floats ({gradientFloats * 4 / 1e6:F2} MB)");
        results["step"] = new
        {
            segment_length = l, documents, segments, best_seconds = best, median_seconds = median2, tokens_per_second = tokens / best,
            median_compute_seconds = Median(computes), reduce_ms = Median(reduces) * 1e3, gradient_floats = gradientFloats,
        };
        return 0;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.OrderBy(x => x).ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
