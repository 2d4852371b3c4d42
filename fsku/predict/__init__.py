"""Answering FSKU questions with a model: prompts with retrieved context, multiple choice by
generation or by likelihood, a fallback for every failure, a time budget, resumable runs."""
