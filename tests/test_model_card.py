"""Model cards: Hub-valid metadata, the run's settings, and user notes that survive regeneration."""

from __future__ import annotations

from huggingface_hub import ModelCard

from ddpm_hub.model_card import DEFAULT_USER_NOTES, card_info_for_run, write_model_card

HPARAMS = {
    "dataset_name": "huggan/smithsonian_butterflies_subset", "train_data_dir": "None", "model": "ddpm-64",
    "resolution": 64, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "use_ema": True,
    "hub_token": "must-not-appear",
}  # fmt: skip


def test_card_metadata_and_content(tmp_path):
    info = card_info_for_run(HPARAMS, {"final_loss": 0.031}, repo_id="org/butterflies")
    card = ModelCard.load(write_model_card(tmp_path, info))
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.datasets == ["huggan/smithsonian_butterflies_subset"]
    assert card.data.license is None  # unknown for a Hub data set: left for the owner, not guessed
    assert 'DiffusionPipeline.from_pretrained("org/butterflies")' in card.text
    assert 'custom_pipeline="org/butterflies", trust_remote_code=True' in card.text
    assert "| prediction_type | v_prediction |" in card.text and "| final_loss | 0.031 |" in card.text
    assert "must-not-appear" not in card.content


def test_builtin_data_carries_its_licence_and_attribution(tmp_path):
    info = card_info_for_run({"dataset_name": "None", "train_data_dir": "None", "resolution": 32})
    card = ModelCard.load(write_model_card(tmp_path, info))
    assert card.data.license == "cc-by-4.0" and card.data.datasets is None
    assert "Twemoji graphics by Twitter, Inc. and other contributors, licensed under CC-BY 4.0" in card.text


def test_user_notes_survive_regeneration(tmp_path):
    info = card_info_for_run(HPARAMS, repo_id="org/butterflies")
    path = write_model_card(tmp_path, info)
    assert DEFAULT_USER_NOTES in path.read_text()
    path.write_text(path.read_text().replace(DEFAULT_USER_NOTES, "Works best with 50 DDIM steps.\n\nSee also v2."))
    info.metrics = {"final_loss": 0.02}
    regenerated = write_model_card(tmp_path, info).read_text()
    assert "Works best with 50 DDIM steps.\n\nSee also v2." in regenerated
    assert DEFAULT_USER_NOTES not in regenerated and "| final_loss | 0.02 |" in regenerated
