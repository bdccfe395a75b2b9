using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;

namespace UioLlm.Tests.Methods;

public sealed class MethodRegistryTests
{
    [Fact]
    public void SpecsParseIntoNameAndOptions()
    {
        var (name, options) = MethodRegistry.ParseSpec(" streaming:sinks=2:window=30 ");
        Assert.Equal("streaming", name);
        Assert.Equal("2", options["sinks"]);
        Assert.Equal("30", options["window"]);
        Assert.Contains("not key=value", Assert.Throws<MethodOptionException>(() => MethodRegistry.ParseSpec("pi:factor")).Message);
        Assert.Contains("given twice", Assert.Throws<MethodOptionException>(() => MethodRegistry.ParseSpec("pi:factor=2:factor=3")).Message);
    }

    [Fact]
    public void BadNamesAndOptionsAreRefusedNamingWhatWasWrong()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 30);
        var context = new MethodContext(new LlamaModel(weights));
        var e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("full,nope", context));
        Assert.Contains("unknown method 'nope'", e.Message);
        Assert.Contains("lm-infinite", e.Message);
        e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("pi:facter=4", context));
        Assert.Contains("unknown option 'facter'", e.Message);
        Assert.Contains("factor", e.Message);
        e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("pi:factor=abc", context));
        Assert.Contains("option factor expects a number, got 'abc'", e.Message);
        e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("streaming:sinks=-1", context));
        Assert.Contains("option sinks must lie in", e.Message);
        e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("knn:positions=far", context));
        Assert.Contains("capped, absolute", e.Message);
        e = Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("uio", context));
        Assert.Contains("--adapter", e.Message);
        Assert.Contains("listed twice", Assert.Throws<MethodOptionException>(() => MethodRegistry.Resolve("full,full", context)).Message);
        Assert.Throws<ArgumentException>(() => MethodRegistry.Register(MethodRegistry.Find("full")));
    }

    /// <summary>Every registered method (UIO through a saved adapter) reads 2.5 windows through the one interface.</summary>
    [Fact]
    public void EveryMethodRunsThroughTheOneInterface()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 16 }, seed: 31);
        var model = new LlamaModel(weights);
        string adapter = Path.Combine(Path.GetTempPath(), $"uio-methods-{Guid.NewGuid():N}");
        try
        {
            using (var uio = new UioModel(model, UioModelTests.Small()))
            {
                UioModelTests.Randomise(uio, 32);
                UioAdapter.Save(uio, adapter);
            }
            // Trained methods join the registry as methods that need an adapter (uio eval does this at start-up).
            UioLlm.Training.Methods.TrainableMethods.RegisterForEvaluation();
            var trained = UioLlm.Training.Methods.TrainableMethods.All.Select(m => m.Name).ToList();
            var skipped = new List<string>();
            var factories = MethodRegistry.Resolve("all", new MethodContext(model), skipped.Add);
            Assert.Equal(["uio", .. trained], skipped.Select(x => x[..x.IndexOf(':')]));
            Assert.All(skipped, x => Assert.EndsWith("needs --adapter (a trained adapter folder)", x));
            foreach (var f in factories) f.Dispose();

            // "all" with a UIO adapter runs every inference method and UIO; the trained methods say the adapter is not theirs.
            skipped.Clear();
            factories = MethodRegistry.Resolve("all", new MethodContext(model, adapter), skipped.Add);
            Assert.Equal(trained, skipped.Select(x => x[..x.IndexOf(':')]));
            Assert.All(skipped, x => Assert.Contains("is not one of its adapters", x));
            // Each trained method from a freshly saved adapter of its own, read back by name.
            foreach (var name in trained)
            {
                string folder = Path.Combine(adapter, name);
                using (var method = UioLlm.Training.Methods.TrainableMethods.Create(name, model, seed: 34))
                    method.SaveAdapter(folder);
                factories.AddRange(MethodRegistry.Resolve(name, new MethodContext(model, folder)));
                // "all" with that adapter: the inference methods and this one method (UIO says the adapter is not its).
                var all = MethodRegistry.Resolve("all", new MethodContext(model, folder));
                Assert.Contains(all, f => f.Method == name);
                Assert.DoesNotContain(all, f => f.Method == "uio" || (f.Method != name && trained.Contains(f.Method)));
                foreach (var f in all) f.Dispose();
            }
            Assert.Equal(MethodRegistry.All.Select(m => m.Name).Order(), factories.Select(f => f.Method).Order());
            int[] ids = new Rng(33).Ints(40, 0, 37);
            foreach (var factory in factories)
                using (factory)
                {
                    // Inference methods resolve their options; a trained method's options come from its adapter.
                    if (!trained.Contains(factory.Method)) Assert.NotEmpty(factory.Options.Keys.Concat(factory.Method == "full" ? ["none"] : []));
                    using var fed = factory.Create();
                    Assert.True(fed.LastLogits.IsEmpty, factory.Label);
                    var logProbs = fed.Feed(ids.AsSpan(0, 25)).Concat(fed.Feed(ids.AsSpan(25))).ToArray();
                    Assert.True(double.IsNaN(logProbs[0]), factory.Label);
                    Assert.All(logProbs.Skip(1), p => Assert.True(double.IsFinite(p) && p <= 0, $"{factory.Label}: {p}"));
                    Assert.Equal(40, fed.TokensSeen);
                    Assert.True(fed.KvBytes > 0, factory.Label);

                    // Prefill reaches the same state: the same last logits.
                    using var prefilled = factory.Create();
                    prefilled.Prefill(ids.AsSpan(0, 25));
                    prefilled.Prefill(ids.AsSpan(25));
                    Check.Close(fed.LastLogits, prefilled.LastLogits, 1e-4, 1e-4, factory.Label);

                    var generated = prefilled.Generate(new UioLlm.Model.Generation.GenerationOptions { MaxNewTokens = 5, Temperature = 0, StopTokens = [] });
                    Assert.Equal(5, generated.Tokens.Length);
                    Assert.Equal(UioLlm.Model.Generation.Sampler.ArgMax(fed.LastLogits), generated.Tokens[0]);
                }
        }
        finally
        {
            if (Directory.Exists(adapter)) Directory.Delete(adapter, recursive: true);
        }
    }

    [Fact]
    public void OptionsAreRecordedAsResolved()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 34);
        var context = new MethodContext(new LlamaModel(weights));
        var factories = MethodRegistry.Resolve("streaming:sinks=2,lm-infinite", context);
        try
        {
            Assert.Equal("streaming (sinks=2)", factories[0].Label);
            Assert.Equal(new Dictionary<string, string> { ["sinks"] = "2", ["window"] = "62" }, factories[0].Options);
            Assert.Equal(new Dictionary<string, string> { ["cap"] = "63", ["global"] = "10", ["local"] = "64" }, factories[1].Options);
        }
        finally
        {
            foreach (var f in factories) f.Dispose();
        }
    }
}

public sealed class AdapterFolderTests
{
    [Fact]
    public void UioParametersCarryTheirFileNamesAndTheFolderRoundTrips()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 35);
        var model = new LlamaModel(weights);
        using var uio = new UioModel(model, UioModelTests.Small());
        UioModelTests.Randomise(uio, 36);
        string folder = Path.Combine(Path.GetTempPath(), $"uio-adapterfolder-{Guid.NewGuid():N}");
        try
        {
            UioAdapter.Save(uio, folder);
            var file = UioLlm.Model.Formats.SafetensorsFile.Read(Path.Combine(folder, AdapterFolder.WeightsFileName));
            var inMemory = uio.TrainableParameters().Select(p => p.Name!).Order().ToList();   // LoRA factors and the memory embedding
            Assert.Equal(inMemory, file.Tensors.Select(t => t.Name).Order().ToList());

            // The generic writer/reader: names and shapes checked, extra tensors refused.
            var tensors = uio.TrainableParameters().Select(p => (p.Name!, p.Value)).ToList();
            string generic = folder + "-generic";
            AdapterFolder.Save(generic, tensors, "{\"peft_type\": \"TEST\"}");
            Assert.Contains("TEST", AdapterFolder.ReadConfig(generic));
            using var copy = new UioModel(model, UioModelTests.Small());
            AdapterFolder.LoadTensors(generic, copy.TrainableParameters().Select(p => (p.Name!, p.Value)));
            Assert.Equal(tensors[3].Item2.ToArray(), copy.TrainableParameters().ElementAt(3).Value.ToArray());
            var e = Assert.Throws<UioLlm.Model.ModelFormatException>(() => AdapterFolder.LoadTensors(generic, copy.TrainableParameters().Skip(1).Select(p => (p.Name!, p.Value))));
            Assert.Contains("unexpected tensor", e.Message);
            e = Assert.Throws<UioLlm.Model.ModelFormatException>(() => AdapterFolder.LoadTensors(generic, [("missing.weight", copy.MemoryEmbedding.Value)]));
            Assert.Contains("tensor 'missing.weight' is missing", e.Message);
            Directory.Delete(generic, recursive: true);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
