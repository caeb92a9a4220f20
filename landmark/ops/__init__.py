"""Gates and monitoring: data quality (Great Expectations), drift (Evidently), promotion gates, the model registry, the web UIs."""
