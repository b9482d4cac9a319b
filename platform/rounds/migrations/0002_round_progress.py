from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("rounds", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="round",
            name="progress",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
